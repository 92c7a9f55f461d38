"""What a run prints: what was used and why, what the paradigms replaced, a live progress bar, evaluations.

Only the main process prints. On a terminal the progress bar shows step,
loss, lr, tokens/s and ETA; when output goes to a file or CI log, where a
live bar would print nothing until the end, a plain line is printed every
tenth of the run instead.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from newcompute.composer import ComposeReport
from newcompute.evaluate import EvalResult


def report_tables(report: ComposeReport) -> list[Table]:
    """What the paradigms replaced and the optimizer groups, as ``newcompute train`` and ``transform`` print them."""
    layers = Table(title="Layers replaced")
    for column in ("paradigm", "from", "to", "count"):
        layers.add_column(column)
    for (paradigm, source, target), count in sorted(report.replaced_types.items()):
        layers.add_row(paradigm, source, target, str(count))
    if not report.replaced_types:
        layers.add_row("—", "—", "—", "0")
    attention = Table(title="Attention intercepted")
    attention.add_column("paradigm")
    attention.add_column("layers")
    for paradigm, names in report.attention.items():
        attention.add_row(paradigm, str(len(names)))
    if not report.attention:
        attention.add_row("—", "0 (model attention unchanged)")
    tables = [layers, attention]
    if report.optimizer_groups:
        groups = Table(title=f"Optimizer ({report.optimizer_paradigm or 'default AdamW'})")
        for column in ("group", "optimizer", "lr", "params", "elements", "kinds"):
            groups.add_column(column)
        for row in report.optimizer_groups:
            kinds = ", ".join(f"{k}×{n}" for k, n in row["kinds"].items())
            groups.add_row(row["group"], row["optimizer"], f"{row['lr']:.3g}", str(row["params"]), f"{row['numel']:,}", kinds)
        tables.append(groups)
    return tables


class RunDisplay:
    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: int | None = None
        self._line_every = 1
        self._total = 0

    def used(self, rows: list[tuple[str, str]]) -> None:
        """A two-column table of every choice the run made and where it came from."""
        if not self.enabled:
            return
        table = Table(title="Training run", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in rows:
            table.add_row(key, value)
        self.console.print(table)

    def print(self, renderable: object) -> None:
        """Text is printed as it is: it quotes paths and layer names, whose brackets are not markup."""
        if self.enabled:
            self.console.print(renderable, highlight=False, markup=False)

    def start(self, first_step: int, total: int) -> None:
        self._total = total
        self._line_every = max(1, total // 10)
        if not self.enabled or not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task("train", total=total, completed=first_step, loss="—", lr="—", speed="—")
        self._progress.start()

    def step(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if not self.enabled:
            return
        fields = {"loss": f"{loss:.4f}", "lr": f"{lr:.3g}", "speed": f"{tokens_per_s:,.0f}"}
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step, **fields)
        elif step % self._line_every == 0 or step == self._total:
            self.console.print(
                f"step {step}/{self._total}  loss {fields['loss']}  lr {fields['lr']}  {fields['speed']} tok/s",
                highlight=False,
            )

    def evaluation(self, step: int, result: EvalResult, final: bool = False) -> None:
        label = "final validation" if final else "validation"
        self.print(
            f"step {step}: {label} loss {result.loss:.4f}, perplexity {result.perplexity:.2f} "
            f"({result.blocks} blocks, {result.tokens:,} predicted tokens)"
        )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> RunDisplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
