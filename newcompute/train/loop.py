"""The training loop: accumulate, clip, step, evaluate, checkpoint, stop safely.

Every optimizer step consumes ``batch_size`` samples of the seeded block
order (or of the stream, in stream order); process ``r`` takes its
micro-batches from interleaved slices of them, so the global batch is the
same whatever the number of processes, and a DataLoader fetches them ahead
(:mod:`newcompute.train.loader`). The data position (the step number, and
for a stream where it stands) is saved with accelerate's model, optimizer,
scheduler and RNG states, which makes a resumed run on CPU repeat the
losses of an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate.checkpointing import load_accelerator_state
from accelerate.utils import DistributedType
from rich.console import Console
from torch import nn
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from newcompute import __version__, run_files
from newcompute.attention import unpacked_sequences
from newcompute.composer import apply
from newcompute.config import RunConfig
from newcompute.costs import estimate_costs
from newcompute.errors import ConfigError, RunError
from newcompute.evaluate import EvalResult, evaluate_loss
from newcompute.plugins import Registry
from newcompute.record import ADAPTER_DIR, save_transformed
from newcompute.train import checkpoint
from newcompute.train.card import write_card
from newcompute.train.display import RunDisplay, report_tables
from newcompute.train.graphs import GraphedMicroStep
from newcompute.train.guard import Diverged, DivergenceGuard
from newcompute.train.interrupt import StopRequest
from newcompute.train.metrics import MetricsLog, peak_memory, truncate_metrics, write_summary
from newcompute.train.loader import BatchFeed, Slicing, pins_batches
from newcompute.train.setup import Session, build_session
from newcompute.train.sharded_checkpoint import is_sharded, load_sharded
from newcompute.train.telemetry import StepTelemetry
from newcompute.train.teardown import release_reducer
from newcompute.train.trackers import start_trackers

StepCallback = Callable[[int, float], None]


@dataclass
class TrainResult:
    run_dir: Path
    status: Literal["finished", "interrupted"]
    step: int
    losses: dict[int, float] = field(default_factory=dict)
    final: EvalResult | None = None


@dataclass(frozen=True)
class StepOutcome:
    loss: float
    lr: float
    grad_norm: float | None
    seconds: float
    stop: bool


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No tqdm bar from ``save_pretrained`` in the middle of the run's own output."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tracker configs take flat scalars: ``{"train.lr": 1e-3, …}``, lists as text."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class Trainer:
    def __init__(self, session: Session, display: RunDisplay, on_step: StepCallback | None) -> None:
        self.session = session
        self.display = display
        self.on_step = on_step
        settings = session.run.train
        self.guard = DivergenceGuard(settings.divergence_factor, settings.divergence_patience)
        self.step = 0
        self.saved_step = -1
        self.pending: Path | None = None
        self.kept: dict[int, float] = {}
        self.best_val = math.inf
        self.losses: dict[int, float] = {}
        self.speed = (0, 0.0)
        self.first_step_wait = 0.0
        self.metrics = MetricsLog(session.run_dir, enabled=False)
        self.untraced = settings.compile
        self.settling_steps = 2 if settings.compile else 1
        plan = session.plan
        slicing = Slicing(
            plan.batch_size, plan.micro_batch_size, plan.accumulation, plan.processes, session.accelerator.process_index
        )
        device = session.accelerator.device
        pin = pins_batches(device, session.cuda_graphs.enabled)
        self.feed = BatchFeed(session.blocks, slicing, plan.steps, device, session.data_workers, pin)
        self.telemetry = StepTelemetry(
            settings.telemetry_every,
            session.model,
            session.optimizer,
            session.registry,
            error=settings.telemetry_error,
            stride=settings.telemetry_stride,
        )
        graphed = session.cuda_graphs.enabled
        self.graphed = (
            GraphedMicroStep(session.model, self._eager_micro_step, display.print, self.telemetry.wait)
            if graphed
            else None
        )

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "guard": self.guard.state_dict(),
            "best_val_loss": self.best_val,
            "data": self.feed.state(self.step),
            "run": self.session.record,
            "newcompute_version": __version__,
        }

    def _restore(self, folder: Path) -> None:
        accelerator = self.session.accelerator
        if is_sharded(folder) and accelerator.distributed_type != DistributedType.FSDP:
            optimizer = getattr(self.session.optimizer, "optimizer", self.session.optimizer)
            load_sharded(folder, accelerator.unwrap_model(self.session.model), optimizer)
            load_accelerator_state(
                str(folder), [], [], [self.session.scheduler], [], accelerator.process_index, accelerator.scaler
            )
        else:
            accelerator.load_state(str(folder))
        state = checkpoint.read_state(folder)
        self.step = self.saved_step = int(state["step"])
        self.guard.load_state_dict(state["guard"])
        self.best_val = float(state["best_val_loss"])
        self.session.blocks.restore(state.get("data"), self.step * self.session.plan.batch_size)
        if self.session.accelerator.is_main_process:
            truncate_metrics(self.session.run_dir, self.step, self.display.print)

    def _nonfinite_weights(self) -> int:
        """How many parameter tensors hold a NaN or Inf, over all processes (their shards, under FSDP).

        A tensor's maximum and minimum are NaN or ±Inf exactly when it holds one,
        and need no temporary the size of the tensor.
        """
        locals_ = [p.to_local() if isinstance(p, DTensor) else p for p in self.session.model.parameters()]
        ends = [torch.stack([t.detach().amax(), t.detach().amin()]).float() for t in locals_ if t.numel()]
        bad = torch.zeros((), device=self.session.accelerator.device)
        if ends:
            bad += (~torch.isfinite(torch.stack(ends)).all(dim=1)).sum()
        if self.session.plan.processes > 1:
            bad = self.session.accelerator.reduce(bad, reduction="sum")
        return int(bad.item())

    def _save(self) -> None:
        """Write the checkpoint of this step as pending: it is kept once the loss of its weights is known good.

        Weights with a NaN or Inf are never written: the run has diverged. The measured steps' records are
        written first: a run resumed from this checkpoint keeps the lines up to its step, and would miss any
        still being written were this one killed.
        """
        accelerator = self.session.accelerator
        self.telemetry.flush(self.metrics, accelerator)
        self.telemetry.wait()
        bad = self._nonfinite_weights()
        if bad:
            raise Diverged(f"after the update of step {self.step}, {bad} weight tensor(s) hold NaN or Inf")

        def write(folder: Path) -> None:
            accelerator.save_state(str(folder), safe_serialization=True)
            if accelerator.is_main_process:
                checkpoint.write_state(folder, self._trainer_state())

        self.pending = checkpoint.write_pending(
            self.session.run_dir, self.step, write, is_main=accelerator.is_main_process, wait=accelerator.wait_for_everyone
        )
        self.saved_step = self.step

    def _settle(self, keep: bool, loss: float, measured: str) -> None:
        """Keep the pending checkpoint (its weights scored ``loss``) or drop it."""
        if self.pending is None:
            return
        accelerator = self.session.accelerator
        step = self.saved_step
        if accelerator.is_main_process:
            if keep:
                checkpoint.commit(self.pending, self.session.run.train.keep_checkpoints)
            else:
                checkpoint.discard(self.pending)
        accelerator.wait_for_everyone()
        self.pending = None
        if keep:
            self.kept[step] = loss
        else:
            self.display.print(
                f"step {step}: checkpoint not kept: its weights scored loss {loss:.4g} {measured}, above the guard "
                f"line ({self.guard.factor:g} × {self.guard.best:.4g})"
            )

    def _probe_loss(self) -> float:
        """The loss of the current weights on the next step's batches, without training on them.

        What a pending checkpoint is judged by when the run stops before that step.
        """
        session, plan = self.session, self.session.plan
        total = torch.zeros((), device=session.accelerator.device)
        with torch.no_grad(), unpacked_sequences():
            for micro in range(plan.accumulation):
                batch = self._batch()
                total += session.model(input_ids=batch, labels=batch, use_cache=False).loss.detach().float()
        mean = total / plan.accumulation
        if plan.processes > 1:
            mean = session.accelerator.reduce(mean, reduction="mean")
        return float(mean.item())

    def _batch(self) -> torch.Tensor:
        """This process's next micro-batch: they come in order, micro-step by micro-step of each step."""
        return self.feed.next()

    def _eager_micro_step(self, batch: torch.Tensor) -> torch.Tensor:
        with unpacked_sequences():
            loss = self.session.model(input_ids=batch, labels=batch, use_cache=False).loss
        self.session.accelerator.backward(loss)
        return loss

    @contextmanager
    def _first_call_eager(self) -> Iterator[None]:
        """Under ``--compile``, run this process's first micro-step eagerly, and compile from the second.

        A paradigm may settle state on its first call (optical calibrates its ranges from the first batch);
        traced then, the compiled model would hold that branch, and its flag flipping would compile the
        whole model a second time. Traced from the second call, it compiles once.
        """
        if not self.untraced:
            yield
            return
        self.untraced = False
        with torch.compiler.set_stance("force_eager"):
            yield

    def train_step(self, stop_requested: bool = False, measured: bool = False) -> StepOutcome:
        session, plan, accelerator = self.session, self.session.plan, self.session.accelerator
        clip = session.run.train.grad_clip
        started = time.perf_counter()
        lr = float(session.optimizer.param_groups[0]["lr"])
        total = torch.zeros((), device=accelerator.device)
        grad_norm: torch.Tensor | None = None
        for _ in range(plan.accumulation):
            batch = self._batch()
            with accelerator.accumulate(session.model):
                with self._first_call_eager():
                    if self.graphed is None or (measured and not self.telemetry.capturable):
                        loss = self._eager_micro_step(batch)
                    else:
                        loss = self.graphed(batch, measured=measured)
                total += loss.detach().float()
                if accelerator.sync_gradients:
                    if clip is not None:
                        grad_norm = accelerator.clip_grad_norm_(session.model.parameters(), clip)
                    session.optimizer.step()
                    session.scheduler.step()
                    session.optimizer.zero_grad(set_to_none=self.graphed is None)
        shared = torch.stack([total / plan.accumulation, torch.tensor(float(stop_requested), device=total.device)])
        if plan.processes > 1:
            shared = accelerator.reduce(shared, reduction="mean")
        if isinstance(grad_norm, DTensor):  # FSDP2 computes the norm over sharded gradients
            grad_norm = grad_norm.full_tensor()
        norm = [grad_norm.detach().float().view(1)] if grad_norm is not None else []
        self.telemetry.flush(self.metrics, accelerator)
        loss_value, stop, *norm_value = torch.cat([shared, *norm]).tolist()
        return StepOutcome(
            loss=loss_value,
            lr=lr,
            grad_norm=norm_value[0] if norm_value else None,
            seconds=time.perf_counter() - started,
            stop=stop > 0,
        )

    def _record_step(self, outcome: StepOutcome) -> None:
        plan = self.session.plan
        tokens_per_s = plan.tokens_per_step / outcome.seconds
        if len(self.losses) >= self.settling_steps:
            tokens, seconds = self.speed
            self.speed = (tokens + plan.tokens_per_step, seconds + outcome.seconds)
        else:  # the first step starts the workers, the one compiling compiles: left out of speed and data wait
            self.first_step_wait = self.feed.waited
        self.losses[self.step] = outcome.loss
        record = {
            "kind": "train",
            "step": self.step,
            "loss": outcome.loss,
            "lr": outcome.lr,
            "grad_norm": outcome.grad_norm,
            "tokens": self.step * plan.tokens_per_step,
            "tokens_per_s": tokens_per_s,
        }
        self.metrics.write(record)
        self.session.accelerator.log(
            {"train/loss": outcome.loss, "train/lr": outcome.lr, "train/tokens_per_s": tokens_per_s}, step=self.step
        )
        self.display.step(self.step, outcome.loss, outcome.lr, tokens_per_s)

    def _evaluate(self, final: bool) -> EvalResult:
        session = self.session
        result = evaluate_loss(
            session.model,
            session.validation,
            session.plan.micro_batch_size,
            session.accelerator,
            seed=session.run.train.seed,
            max_batches=None if final else session.run.train.eval_batches,
        )
        self.best_val = min(self.best_val, result.loss)
        record = {
            "kind": "eval",
            "step": self.step,
            "val_loss": result.loss,
            "val_ppl": result.perplexity,
            "blocks": result.blocks,
            "final": final,
        }
        self.metrics.write(record)
        session.accelerator.log({"eval/loss": result.loss, "eval/perplexity": result.perplexity}, step=self.step)
        self.display.evaluation(self.step, result, final)
        if not math.isfinite(result.loss):
            what = "the final model was not saved" if final else "training stopped"
            raise Diverged(f"the validation loss became {result.loss} at step {self.step}; {what}")
        return result

    def run(self) -> TrainResult:
        session = self.session
        settings = session.run.train
        if session.resume_from is not None:
            self._restore(session.resume_from)
        self.feed.start(self.step)
        self.metrics = MetricsLog(session.run_dir, session.accelerator.is_main_process)
        start_trackers(session.accelerator, settings, session.run_dir, _flat(session.record))
        try:
            with StopRequest(self.display.print) as stop, self.display:
                self.display.start(self.step, session.plan.steps)
                while self.step < session.plan.steps:
                    measured = self.telemetry.due(self.step + 1)
                    if measured:
                        self.telemetry.flush(self.metrics, session.accelerator)
                    with self.telemetry.measuring(measured):
                        outcome = self.train_step(stop.requested, measured=measured)
                    self.step += 1
                    self.guard.check(self.step, outcome.loss)
                    self._settle(not self.guard.suspicious, outcome.loss, f"at step {self.step}")
                    if outcome.grad_norm is not None and not math.isfinite(outcome.grad_norm):
                        raise Diverged(f"the gradient norm became {outcome.grad_norm} at step {self.step}")
                    self._record_step(outcome)
                    if measured:
                        self.telemetry.defer(self.step)
                    if self.step >= session.plan.steps or outcome.stop:
                        self.telemetry.flush(self.metrics, session.accelerator)
                        self.telemetry.wait()
                    if self.on_step is not None:
                        self.on_step(self.step, outcome.loss)
                    if self.step % session.plan.eval_every == 0 and self.step < session.plan.steps:
                        self._evaluate(final=False)
                    if self.step % settings.save_every == 0 or outcome.stop:
                        self._save()
                    if outcome.stop:
                        probe = self._probe_loss()
                        self._settle(self.guard.accepts(probe), probe, "on the batch of the next step")
                        return self._interrupted()
            return self._finish()
        except Diverged as exc:
            if self.pending is not None and session.accelerator.is_main_process:
                checkpoint.discard(self.pending)
            raise RunError(self._divergence_message(str(exc))) from None
        finally:
            self.telemetry.close()
            self.feed.close()
            self.metrics.close()
            release_reducer(session.model)
            session.accelerator.end_training()

    def _interrupted(self) -> TrainResult:
        self.display.stop()
        newest = checkpoint.latest_checkpoint(self.session.run_dir)
        held = "" if self.step in self.kept else " (none kept now: the loss was above the guard line)"
        self.display.print(
            f"Stopped at step {self.step}. Newest checkpoint: {newest}{held}. "
            "Repeat the command with --resume to continue from it."
        )
        return TrainResult(self.session.run_dir, "interrupted", self.step, self.losses)

    def _divergence_message(self, what: str) -> str:
        lr = self.session.plan.lr
        kept = checkpoint.latest_checkpoint(self.session.run_dir)
        where = "No good checkpoint had been written yet."
        if kept is not None:
            step = int(checkpoint.read_state(kept)["step"])
            scored = f", whose weights scored loss {self.kept[step]:.4g} when it was kept" if step in self.kept else ""
            where = f"The last good checkpoint is {kept}{scored}."
        return (
            f"Training diverged: {what}. The learning rate {lr:.3g} is probably too high for this model and "
            f"paradigm: start again with a lower one, e.g. --lr {lr / 10:.2g}. {where}"
        )

    def _finish(self) -> TrainResult:
        session = self.session
        if self.saved_step != self.step:
            self._save()
        final = self._evaluate(final=True)
        self._settle(True, final.loss, "on the validation blocks")
        self._save_model()
        if session.accelerator.is_main_process:
            self._write_summary(final, self._cost_estimates())
            self._write_card()
        session.accelerator.wait_for_everyone()
        self.display.print(
            f"Done: {self.step} steps. Final validation loss {final.loss:.4f}, perplexity {final.perplexity:.2f}. "
            f"Model saved in {session.run_dir} (newcompute eval {session.run_dir} reloads it)."
        )
        return TrainResult(session.run_dir, "finished", self.step, self.losses, final)

    def _final_model(self) -> nn.Module | None:
        """The model to save, on the main process (None elsewhere); gathered from its shards under FSDP.

        An FSDP2 module holds sharded parameters, so the full state dict is
        gathered (a collective: every process takes part) and loaded into a
        plain copy rebuilt with the same paradigms.
        """
        session = self.session
        accelerator = session.accelerator
        if accelerator.distributed_type != DistributedType.FSDP:
            return accelerator.unwrap_model(session.model, keep_torch_compile=False) if accelerator.is_main_process else None
        state = accelerator.get_state_dict(session.model)
        if not accelerator.is_main_process:
            return None
        config = accelerator.unwrap_model(session.model).config
        plain = AutoModelForCausalLM.from_config(config, trust_remote_code=session.trust_remote_code)
        apply(plain, session.report.uses, registry=session.registry)
        plain.load_state_dict(state)
        return plain

    def _save_model(self) -> None:
        session = self.session
        model = self._final_model()
        if model is None:
            return
        if session.plan.mode == "lora":
            from newcompute.lora import save_adapters

            run_files.register(session.run_dir, ADAPTER_DIR)
            model = save_adapters(model, session.run_dir / ADAPTER_DIR)
        with quiet_transformers():
            save_transformed(model, session.tokenizer, session.run, session.run_dir)

    def _cost_estimates(self) -> dict[str, Any] | None:
        """The paradigms' cost estimates for the tokens trained on, shown labelled as estimates."""
        session = self.session
        model = session.accelerator.unwrap_model(session.model, keep_torch_compile=False)
        plan = session.plan
        costs = estimate_costs(
            model, session.report, session.registry, self.step * plan.tokens_per_step, plan.tokens_per_step,
            plan.block_size,
        )
        if costs is None:
            return None
        for line in costs.lines():
            self.display.print(f"{line} ({costs.to_dict()['label']})")
        return costs.to_dict()

    def _write_card(self) -> None:
        """The run folder's model card; a ``README.md`` of the user's is kept, and the run still finishes."""
        try:
            write_card(self.session.run_dir, registry=self.session.registry)
        except ConfigError as exc:
            self.display.print(f"No model card written: {exc}")

    def _write_summary(self, final: EvalResult, costs: dict[str, Any] | None) -> None:
        session = self.session
        tokens, seconds = self.speed
        memory, memory_kind = peak_memory()
        estimates = {} if costs is None else {"cost_estimates": costs}
        write_summary(
            session.run_dir,
            estimates | {
                "model": session.run.model.name,
                "paradigms": session.report.paradigms,
                "mode": session.plan.mode,
                "params": session.plan.params,
                "steps": self.step,
                "tokens": self.step * session.plan.tokens_per_step,
                "lr": session.plan.lr,
                "final_val_loss": final.loss,
                "final_val_ppl": final.perplexity,
                "best_val_loss": self.best_val,
                "tokens_per_s": tokens / seconds if seconds else None,
                "data_wait_s": self.feed.waited - self.first_step_wait,
                "data_wait_fraction": (self.feed.waited - self.first_step_wait) / seconds if seconds else None,
                "peak_memory_bytes": memory,
                "peak_memory_kind": memory_kind,
                "device": str(session.accelerator.device),
                "processes": session.plan.processes,
                "precision": session.accelerator.mixed_precision,
            },
        )


def train(
    run: RunConfig,
    registry: Registry | None = None,
    paradigms: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    on_step: StepCallback | None = None,
    trust_remote_code: bool = False,
) -> TrainResult:
    """Train (or resume) the run ``run`` describes; ``paradigms`` overrides the file's paradigm list.

    Returns when the run finishes or is stopped by Ctrl-C (after saving a
    checkpoint); raises :class:`~newcompute.RunError` when it diverges and
    :class:`~newcompute.ConfigError` for bad settings. ``on_step(step,
    loss)`` is called after every optimizer step. ``trust_remote_code`` lets
    a model that brings its own code (``auto_map``) run it.
    """
    session = build_session(
        run,
        registry=registry,
        paradigms=paradigms,
        resume=resume,
        overwrite=overwrite,
        trust_remote_code=trust_remote_code,
    )
    try:
        display = RunDisplay(console or Console(), session.accelerator.is_main_process)
        for note in session.notes:
            display.print(note)
        display.used(session.used)
        for table in report_tables(session.report):
            display.print(table)
        return Trainer(session, display, on_step).run()
    finally:
        if session.lock is not None:
            session.lock.release()
