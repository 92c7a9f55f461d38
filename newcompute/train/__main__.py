"""``python -m newcompute.train ARGS`` is ``newcompute train ARGS``: the module ``accelerate launch -m`` runs."""

import sys

from newcompute.cli.app import main

sys.argv = ["newcompute", "train", *sys.argv[1:]]
main()
