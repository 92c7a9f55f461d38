"""``python -m newcompute`` runs the CLI (also how ``accelerate launch -m newcompute`` starts it)."""

from newcompute.cli.app import main

main()
