"""``newcompute card`` and ``newcompute push``: a finished run folder, described and shared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newcompute.cli.common import user_errors
from newcompute.cli.render import console

RunArgument = Annotated[Path, typer.Argument(help="The output folder of a finished 'newcompute train'.")]


def note(text: str) -> None:
    console.print(text, highlight=False, markup=False)


@user_errors
def card(
    run_dir: RunArgument,
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="Name this hub repository in the card's reload instructions.")
    ] = None,
) -> None:
    """Write the run's model card, RUN/README.md: paradigms and their configs, plugin versions, metrics, cost
    estimates and how to reload it. A run writes it when it finishes; this writes it again."""
    from newcompute.plugins import get_registry
    from newcompute.train.card import write_card

    note(f"Wrote {write_card(run_dir.expanduser(), repo_id, get_registry())}")


@user_errors
def push(
    run_dir: RunArgument,
    repo_id: Annotated[str, typer.Argument(help="The hub model repository, NAMESPACE/NAME (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", "--branch", help="Upload to this branch (created if missing).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="A hub token; by default huggingface_hub's own (HF_TOKEN, or 'hf auth login')."),
    ] = None,
    include_checkpoints: Annotated[
        bool,
        typer.Option(
            "--include-checkpoints", help="Also upload checkpoints/ (optimizer state: large, needed only to resume)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the run and list the files; upload nothing.")
    ] = False,
) -> None:
    """Upload a finished run to the Hugging Face hub: the plain model (loadable with transformers alone), the
    paradigms' state and configs, metrics and the model card. The user's own files and checkpoints stay here."""
    from newcompute.plugins import get_registry
    from newcompute.study.push import plan_push, push_run

    plan = plan_push(run_dir, repo_id, include_checkpoints)
    verb = "Would upload" if dry_run else "Uploading"
    note(f"{verb} {len(plan.files)} files of {plan.run_dir} to {repo_id}" + (f" ({revision})" if revision else ""))
    for name in plan.files:
        note(f"  {name}")
    if plan.kept_back:
        shown = ", ".join(plan.kept_back[:8]) + (" …" if len(plan.kept_back) > 8 else "")
        note(
            f"Not uploaded ({len(plan.kept_back)}): files newcompute did not write and, without "
            f"--include-checkpoints, checkpoints: {shown}"
        )
    if dry_run:
        return
    url = push_run(plan, private=private, revision=revision, token=token, registry=get_registry())
    note(f"Pushed to {url}")


def register(app: typer.Typer) -> None:
    """Add ``card`` and ``push`` to the app."""
    app.command()(card)
    app.command()(push)
