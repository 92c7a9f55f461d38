"""Shareable runs: the plain weights load in transformers alone, the model card, ``card`` and ``push`` (hub mocked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from test_train_paradigms import quiet, tiny_run
from typer.testing import CliRunner

from newcompute.cli import render
from newcompute.cli.app import build_app
from newcompute.plugins import get_registry
from newcompute.record import PARADIGM_STATE_FILE
from newcompute.train import train
from newcompute.train.runs import load_run

IDS = [[5, 17, 99, 3, 200, 41, 7, 12]]
PLAIN_LOAD = """
import json, logging, sys, warnings
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_info()
hf_logging.enable_propagation()
hf_logging.disable_default_handler()
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("transformers").addHandler(Keep())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True)
model.eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits
torch.save(logits, sys.argv[3])
tokens = AutoTokenizer.from_pretrained(sys.argv[1])("naïve")["input_ids"]
print(json.dumps({"log": records, "warnings": [str(w.message) for w in caught], "tokens": tokens,
                  "info": {key: sorted(map(str, value)) for key, value in info.items()},
                  "newcompute_imported": any(m.split(".")[0].startswith("newcompute") for m in sys.modules)}))
"""
LOAD_PROBLEMS = ("unexpected", "missing", "newly initialized", "not used", "mismatch")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished tiny runs: optical (which keeps ranges in buffers) and mxfp8."""
    root = tmp_path_factory.mktemp("runs")
    finished = {}
    for paradigm in ("optical", "mxfp8"):
        run = tiny_run(root / paradigm, {paradigm: {}}, steps=2, eval_every=2)
        result = train(run, get_registry(), console=quiet())
        assert result.status == "finished"
        finished[paradigm] = result.run_dir
    return finished


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages on one line each, so a path in them is not broken by wrapping."""
    monkeypatch.setattr(render.console, "width", 400)


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _plain_load(folder: Path, tmp_path: Path) -> tuple[dict[str, Any], torch.Tensor]:
    out = tmp_path / "logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(folder), json.dumps(IDS), str(out)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["stderr"] = done.stderr
    return report, torch.load(out)


def _problems(report: dict[str, Any]) -> list[str]:
    said = [*report["log"], *report["warnings"], report["stderr"]]
    return [text for text in said if any(word in text.lower() for word in LOAD_PROBLEMS)]


@pytest.mark.parametrize("paradigm", ["optical", "mxfp8"])
def test_plain_transformers_loads_the_trained_weights_without_key_warnings(
    runs: dict[str, Path], paradigm: str, tmp_path: Path
) -> None:
    folder = runs[paradigm]
    report, logits = _plain_load(folder, tmp_path)
    assert report["newcompute_imported"] is False
    assert all(keys == [] for keys in report["info"].values()), report["info"]  # missing, unexpected, mismatched…
    assert _problems(report) == []
    assert report["tokens"] == list("naïve".encode())  # the run's byte-level tokenizer, as the card says to load it

    model, _, _ = load_run(folder, get_registry())
    model.eval()
    # The same weights with the paradigms removed: the architecture built by transformers, given the parameters
    # newcompute rebuilt (a replaced layer keeps its source's parameter names).
    plain = type(model)(model.config).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()}, strict=True)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        torch.testing.assert_close(logits, plain(input_ids=ids).logits, rtol=0, atol=0)
        under_paradigm = model(input_ids=ids).logits
    assert not torch.equal(under_paradigm, logits)  # newcompute's own reload computes under the paradigm


def test_paradigm_state_lives_apart_and_newcompute_reads_it_back(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = runs["optical"]
    weights, state = load_file(folder / "model.safetensors"), load_file(folder / PARADIGM_STATE_FILE)
    range_key = "model.layers.0.mlp.up_proj.optical.input_range"
    assert range_key in state and range_key not in weights
    assert not any(".optical." in k or "newcompute_matmuls" in k for k in weights)
    model, _, _ = load_run(folder, get_registry())
    loaded = model.state_dict()
    assert set(state) <= set(loaded)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert state[range_key].abs().max() > 0  # trained ranges, not the initial zeros

    # A folder of the earlier layout (paradigm state inside the weights file) is what transformers complains about,
    # and newcompute still loads it.
    old = _copy(folder, tmp_path)
    save_file(weights | state, str(old / "model.safetensors"), metadata={"format": "pt"})
    (old / PARADIGM_STATE_FILE).unlink()
    report, _ = _plain_load(old, tmp_path)
    assert range_key in report["info"]["unexpected_keys"]
    assert any("optical" in text for text in _problems(report))
    again, _, _ = load_run(old, get_registry())
    assert torch.equal(again.state_dict()[range_key], state[range_key])


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_finished_run_has_a_model_card_of_its_own_figures(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(runs["optical"], tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    card = (folder / "README.md").read_text()
    assert "README.md" in (folder / ".newcompute-files").read_text().split("\n")
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["tags"] == ["newcompute", "optical"]
    assert "base_model" not in meta and "datasets" not in meta  # scratch weights, the built-in corpus
    assert f"| final validation loss (whole validation set) | {summary['final_val_loss']:.4f} |" in card
    assert f"| tokens trained on | {summary['tokens']:,} |" in card
    assert "[paradigm.optical.fc]\nq_levels = 256" in card
    assert "newcompute-optical 0.1.0" in card and "pip install newcompute==0.1.0 newcompute-optical==0.1.0" in card
    assert "## Cost estimates (estimates, not measurements)" in card
    bytes_moved = summary["cost_estimates"]["total"]["bytes_moved_vs_bf16"]
    assert f"| estimated bytes moved | {bytes_moved:.3g} × bf16 |" in card
    mx_card = (runs["mxfp8"] / "README.md").read_text()
    mx_sources = json.loads((runs["mxfp8"] / "summary.json").read_text())["cost_estimates"]["paradigms"]["mxfp8"]
    assert mx_sources["sources"] and all(f"  - Source: {s}\n" in mx_card for s in mx_sources["sources"])
    assert f"AutoModelForCausalLM.from_pretrained({str(folder)!r})" not in card  # written where the run was trained
    assert f"AutoModelForCausalLM.from_pretrained({str(runs['optical'])!r})" in card

    # Regenerated from what the run recorded: a figure it did not record is not claimed.
    del summary["tokens_per_s"]
    (folder / "summary.json").write_text(json.dumps(summary))
    done = CliRunner().invoke(build_app(), ["card", str(folder), "--repo-id", "me/optical-tiny"])
    assert done.exit_code == 0, done.output
    card = (folder / "README.md").read_text()
    assert "throughput (tokens/s)" not in card and "# me/optical-tiny" in card
    assert "snapshot_download('me/optical-tiny')" in card


def test_card_refuses_an_unfinished_run_and_a_users_readme(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(runs["mxfp8"], tmp_path)
    (folder / "summary.json").unlink()
    done = CliRunner().invoke(build_app(), ["card", str(folder)])
    assert done.exit_code == 2
    assert f"{folder / 'summary.json'} is missing" in done.output

    theirs = tmp_path / "theirs"
    shutil.copytree(runs["mxfp8"], theirs)
    manifest = theirs / ".newcompute-files"
    kept = [line for line in manifest.read_text().split("\n") if line and line != "README.md"]
    manifest.write_text("".join(f"{line}\n" for line in kept))
    (theirs / "README.md").write_text("my notes")
    done = CliRunner().invoke(build_app(), ["card", str(theirs)])
    assert done.exit_code == 2 and "README.md" in done.output and "did not write" in done.output
    done = CliRunner().invoke(build_app(), ["push", str(theirs), "me/x", "--dry-run"])
    assert done.exit_code == 2 and f"{theirs / 'README.md'} is not newcompute's model card" in done.output
    assert (theirs / "README.md").read_text() == "my notes"


class FakeApi:
    """Stands in for ``huggingface_hub.HfApi``: records every call, sends nothing."""

    calls: list[tuple[str, tuple, dict]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeApi.calls.append(("__init__", (), kwargs))

    def create_repo(self, *args: Any, **kwargs: Any) -> str:
        FakeApi.calls.append(("create_repo", args, kwargs))
        return f"https://hub.example/{args[0]}"

    def create_branch(self, *args: Any, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_branch", args, kwargs))

    def upload_folder(self, **kwargs: Any) -> None:
        FakeApi.calls.append(("upload_folder", (), kwargs))


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


SHARED = [
    "README.md", "config.json", "generation_config.json", "metrics.jsonl", "model.safetensors", "newcompute.toml",
    PARADIGM_STATE_FILE, "summary.json", "tokenizer.json", "tokenizer_config.json",
]


def test_push_uploads_exactly_the_runs_own_files(
    runs: dict[str, Path], tmp_path: Path, fake_hub: type[FakeApi]
) -> None:
    folder = _copy(runs["optical"], tmp_path)
    (folder / "my-notes.txt").write_text("not for the hub")
    args = ["push", str(folder), "me/optical-tiny", "--private", "--branch", "v1", "--token", "hf_x"]
    done = CliRunner().invoke(build_app(), args)
    assert done.exit_code == 0, done.output
    names = [name for name, _, _ in fake_hub.calls]
    assert names == ["__init__", "create_repo", "create_branch", "upload_folder"]
    assert fake_hub.calls[0][2] == {"token": "hf_x"}
    assert fake_hub.calls[1][1:] == (("me/optical-tiny",), {"private": True, "exist_ok": True, "repo_type": "model"})
    assert fake_hub.calls[2][1:] == (("me/optical-tiny",), {"branch": "v1", "exist_ok": True, "repo_type": "model"})
    upload = fake_hub.calls[3][2]
    assert upload["repo_id"] == "me/optical-tiny" and upload["folder_path"] == str(folder)
    assert upload["revision"] == "v1" and upload["repo_type"] == "model"
    assert upload["allow_patterns"] == SHARED
    assert "snapshot_download('me/optical-tiny')" in (folder / "README.md").read_text()
    assert "Pushed to https://hub.example/me/optical-tiny" in done.output

    fake_hub.calls = []
    done = CliRunner().invoke(build_app(), ["push", str(folder), "me/optical-tiny", "--include-checkpoints"])
    assert done.exit_code == 0, done.output
    upload = fake_hub.calls[-1][2]
    checkpoint = sorted(p.relative_to(folder).as_posix() for p in (folder / "checkpoints").rglob("*") if p.is_file())
    assert any(name.endswith("optimizer.bin") for name in checkpoint)
    assert upload["allow_patterns"] == sorted(SHARED + checkpoint) and upload["revision"] is None
    assert fake_hub.calls[0][2] == {"token": None}  # huggingface_hub then finds HF_TOKEN or its token file


def test_push_dry_run_lists_and_sends_nothing(runs: dict[str, Path], fake_hub: type[FakeApi]) -> None:
    done = CliRunner().invoke(build_app(), ["push", str(runs["mxfp8"]), "me/mx", "--dry-run"])
    assert done.exit_code == 0, done.output
    assert fake_hub.calls == []
    listed = [line.strip() for line in done.output.splitlines() if line.startswith("  ")]
    assert listed == [name for name in SHARED if name != PARADIGM_STATE_FILE or (runs["mxfp8"] / name).exists()]


def test_push_refuses_unfinished_or_damaged_runs_naming_the_file(
    runs: dict[str, Path], tmp_path: Path, fake_hub: type[FakeApi]
) -> None:
    folder = _copy(runs["optical"], tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = CliRunner().invoke(build_app(), ["push", str(folder), "me/x"])
    assert done.exit_code == 2 and f"{weights} is not a complete safetensors file" in done.output
    shutil.rmtree(folder)
    folder = _copy(runs["optical"], tmp_path)
    (folder / "summary.json").unlink()
    done = CliRunner().invoke(build_app(), ["push", str(folder), "me/x"])
    assert done.exit_code == 2 and "summary.json is missing" in done.output
    assert fake_hub.calls == []


def test_push_without_huggingface_hub_says_what_to_install(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(runs["optical"], tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    done = CliRunner().invoke(build_app(), ["push", str(folder), "me/x"])
    assert done.exit_code == 2 and "pip install huggingface_hub" in done.output


def test_push_to_a_refusing_hub_says_how_to_log_in(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    class Refusing(FakeApi):
        def create_repo(self, *args: Any, **kwargs: Any) -> str:
            response = httpx2.Response(401, request=httpx2.Request("POST", "https://hub.example/api/repos/create"))
            raise HfHubHTTPError("401 Unauthorized", response=response)

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    done = CliRunner().invoke(build_app(), ["push", str(_copy(runs["optical"], tmp_path)), "me/x"])
    assert done.exit_code == 2 and "refused the request (401" in done.output and "hf auth login" in done.output


def test_push_to_an_unreachable_hub_fails_at_once(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real huggingface_hub, pointed at a local port nothing listens on: exit 2 in seconds, no retrying."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    folder = _copy(runs["optical"], tmp_path)
    started = time.monotonic()
    done = CliRunner().invoke(build_app(), ["push", str(folder), "me/x", "--token", "hf_not_a_token"])
    assert time.monotonic() - started < 10
    assert done.exit_code == 2, done.output
    assert f"could not reach the hub at {endpoint}" in done.output and "HF_ENDPOINT" in done.output


def test_a_run_finishes_without_a_card_when_readme_is_the_users(runs: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(runs["mxfp8"], tmp_path)
    manifest = folder / ".newcompute-files"
    kept = [line for line in manifest.read_text().split("\n") if line and line != "README.md"]
    manifest.write_text("".join(f"{line}\n" for line in kept))
    (folder / "README.md").write_text("my notes")
    console = quiet()
    result = train(tiny_run(folder, {"mxfp8": {}}, steps=1), get_registry(), overwrite=True, console=console)
    assert result.status == "finished" and (folder / "summary.json").is_file()
    assert (folder / "README.md").read_text() == "my notes"
    assert "No model card written" in " ".join(console.file.getvalue().split())


def test_the_card_names_a_base_model_and_datasets_only_from_the_hub(tmp_path: Path) -> None:
    from newcompute.train.card import base_model, hub_datasets

    registry = get_registry()
    hub_preset = next(name for name, preset in registry.presets.items() if preset.hub_id)
    pretrained = {"mode": "pretrained"}
    assert base_model({"model": {"name": "org/model"}}, pretrained, registry) == "org/model"
    assert base_model({"model": {"name": hub_preset}}, pretrained, registry) == registry.presets[hub_preset].hub_id
    assert base_model({"model": {"name": "org/model"}}, {"mode": "scratch"}, registry) is None
    (tmp_path / "org").mkdir()
    assert base_model({"model": {"name": str(tmp_path / "org")}}, pretrained, registry) is None
    assert base_model({"model": {"name": "./org/model"}}, pretrained, registry) is None

    assert hub_datasets({"data": {"dataset": "hf:org/corpus"}}) == ["org/corpus"]
    assert hub_datasets({"data": {"dataset": "org/corpus"}}) == ["org/corpus"]
    assert hub_datasets({"data": {"dataset": "builtin:pydoc"}}) == []
    assert hub_datasets({"data": {"dataset": "data/train.jsonl"}}) == []  # a local file, even once it is gone
    assert hub_datasets({"data": {"dataset": "/abs/corpus"}}) == []
