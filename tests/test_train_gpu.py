"""On a GPU the trainer runs bf16 autocast over fp32 weights, and a saved run reloads to its reported loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_train_paradigms import make_registry, quiet, tiny_run

from newcompute.train import train
from newcompute.train.evaluation import evaluate_model, load_run_for_eval

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_run_on_gpu_reloads_to_its_loss(tmp_path: Path) -> None:
    registry = make_registry()
    result = train(tiny_run(tmp_path, {"int8ish": {}, "noisy-attention": {}}, steps=6), registry, console=quiet())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["device"].startswith("cuda")
    assert all(math.isfinite(loss) for loss in result.losses.values())
    assert result.losses[6] < result.losses[1]
    target = load_run_for_eval(tmp_path, registry=registry)
    assert next(target.model.parameters()).dtype == torch.float32
    assert evaluate_model(target) == result.final


def test_compiled_run_matches_eager_closely(tmp_path: Path) -> None:
    eager = train(tiny_run(tmp_path / "eager", steps=3, cuda_graphs="off"), make_registry(), console=quiet())
    compiled_run = tiny_run(tmp_path / "compiled", steps=3, compile=True, cuda_graphs="off")
    compiled = train(compiled_run, make_registry(), console=quiet())
    for step in (1, 2, 3):
        assert compiled.losses[step] == pytest.approx(eager.losses[step], rel=2e-2)


@pytest.mark.parametrize("paradigms", [None, {"optical": {}}, {"mxfp8": {}}], ids=["bf16", "optical", "mxfp8"])
def test_cuda_graph_run_repeats_the_eager_losses(tmp_path: Path, paradigms: dict | None) -> None:
    """Replaying captured micro-steps (with gradient accumulation: 2 per step) computes what eager launches do."""
    from newcompute.plugins import get_registry

    registry = get_registry() if paradigms else make_registry()
    eager = train(tiny_run(tmp_path / "eager", paradigms, steps=6, cuda_graphs="off"), registry, console=quiet())
    console = quiet()
    graphed = train(tiny_run(tmp_path / "graphed", paradigms, steps=6, cuda_graphs="on"), registry, console=console)
    shown = console.file.getvalue()
    assert "CUDA graphs" in shown and "capturing the training step failed" not in shown, shown
    for step in range(1, 7):
        assert graphed.losses[step] == pytest.approx(eager.losses[step], rel=1e-3), step
    assert graphed.final is not None and eager.final is not None
    assert graphed.final.loss == pytest.approx(eager.final.loss, rel=1e-3)


def test_auto_captures_first_party_paradigms_and_says_why(tmp_path: Path) -> None:
    from newcompute.plugins import get_registry

    console = quiet()
    train(tiny_run(tmp_path, {"optical": {}}, steps=4), get_registry(), console=console)
    shown = " ".join(console.file.getvalue().split())
    assert "on: one CUDA GPU and every paradigm in the step (optical) can be captured" in shown, shown
    assert "capturing the training step failed" not in shown


@pytest.mark.parametrize("paradigm", ["optical", "mxfp8"])
def test_measured_steps_replay_their_own_graph_with_the_eager_statistics(tmp_path: Path, paradigm: str) -> None:
    """A --telemetry-every step under CUDA graphs replays a capture that collects what an eager step collects."""
    from newcompute.plugins import get_registry

    def telemetry(folder: Path, graphs: str) -> tuple[dict[tuple[int, str], dict], str]:
        console = quiet()
        run = tiny_run(folder, {paradigm: {}}, steps=8, cuda_graphs=graphs, telemetry_every=2, lr=1e-12)
        train(run, get_registry(), console=console)
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        found = {(r["step"], r["layer"]): r["statistics"] for r in lines if r.get("kind") == "telemetry"}
        return found, console.file.getvalue()

    eager, _ = telemetry(tmp_path / "eager", "off")
    graphed, shown = telemetry(tmp_path / "graphed", "on")
    assert "failed" not in shown, shown
    assert set(graphed) == set(eager) and {step for step, _ in eager} == {2, 4, 6, 8}
    # A learning rate too small to move a weight keeps both runs on the same weights: a rate counted over a
    # few hundred sampled elements would otherwise differ by an element as bf16 runs drift apart.
    for key, stats in eager.items():
        assert set(graphed[key]) == set(stats), key
        for name, value in stats.items():
            assert graphed[key][name] == pytest.approx(value, rel=1e-3, abs=1e-6), (key, name)
