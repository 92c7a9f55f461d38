"""The model card of a finished run: ``RUN/README.md``, in the Hugging Face model-card format.

A run folder is meant to be shared (``newcompute push``), and whoever opens
it first needs to know what it is: which paradigms computed it, with which
validated settings and plugin releases, what it scored, what the simulated
hardware might cost, and how to load it. The card is written from the
run's own files only (``newcompute.toml``, ``summary.json``,
``lm_eval.json``), so it never states a figure the run did not record: a
quantity missing there is missing from the card. It opens with YAML front
matter (``library_name``, ``tags``, ``base_model``, ``datasets``) that the
hub reads.

A run writes its card when it finishes; ``newcompute card RUN`` writes it
again (for a run of an older release, or after ``newcompute eval --tasks``
added scores), and ``newcompute push`` writes it naming the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w

from newcompute import run_files
from newcompute.config import read_toml
from newcompute.cost_model import QUANTITIES
from newcompute.errors import ConfigError
from newcompute.plugins import Registry
from newcompute.record import ADAPTER_DIR, PARADIGM_STATE_FILE, RECORD_FILE, read_record
from newcompute.train.compare import read_lm_eval
from newcompute.train.metrics import SUMMARY_FILE, read_summary

CARD_FILE = "README.md"
HUB_DATASET_PREFIX = "hf:"
LOCAL_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv", ".gz", ".zst", ".arrow")
"""Suffixes of data files: a path with one is a local file even when it is gone, never a hub dataset id."""
_QUANTITY_NAMES = {
    "matmul_energy_vs_bf16": "matmul energy",
    "bytes_moved_vs_bf16": "bytes moved",
    "matmul_throughput_vs_bf16": "matmul throughput",
}
_METRICS = (
    ("final_val_loss", "final validation loss (whole validation set)", "{:.4f}"),
    ("final_val_ppl", "final validation perplexity", "{:.2f}"),
    ("best_val_loss", "best validation loss of the run's evaluations", "{:.4f}"),
    ("steps", "optimizer steps", "{:,}"),
    ("tokens", "tokens trained on", "{:,}"),
    ("tokens_per_s", "training throughput (tokens/s)", "{:,.0f}"),
    ("params", "parameters", "{:,}"),
    ("mode", "training mode", "{}"),
    ("peak_memory_bytes", "peak memory (bytes)", "{:,}"),
    ("device", "device", "{}"),
    ("processes", "processes", "{}"),
    ("precision", "mixed precision", "{}"),
)


def finished_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's record (``newcompute.toml`` as written) and summary; a run that has not finished is refused."""
    read_record(run_dir)  # refuses a folder newcompute did not write, or a record that does not validate
    summary = read_summary(run_dir)
    if not summary:
        raise ConfigError(
            f"{run_dir / SUMMARY_FILE} is missing: the run in {run_dir} has not finished (a run writes it last). "
            f"Finish it with 'newcompute train --config {run_dir / RECORD_FILE} --resume'."
        )
    return read_toml(run_dir / RECORD_FILE), summary


def _yaml_list(key: str, values: list[str]) -> list[str]:
    """A YAML block list; JSON strings are valid YAML double-quoted scalars, so any name is safe."""
    return [f"{key}:", *(f"- {json.dumps(value)}" for value in values)] if values else []


def base_model(record: dict[str, Any], summary: dict[str, Any], registry: Registry | None) -> str | None:
    """The hub id the run started from: a pretrained hub model, or a preset's published weights; else None."""
    if summary.get("mode") == "scratch":
        return None
    name = str(record.get("model", {}).get("name", ""))
    presets = registry.presets if registry is not None else {}
    if name in presets:
        return presets[name].hub_id
    local = name.startswith((".", "/", "~")) or Path(name).expanduser().exists()
    return name if name.count("/") == 1 and not local else None


def hub_datasets(record: dict[str, Any]) -> list[str]:
    """Hub dataset ids the run read (``hf:org/name`` or a bare ``org/name``); local files and built-ins are not."""
    dataset = str(record.get("data", {}).get("dataset", ""))
    if dataset.startswith(HUB_DATASET_PREFIX):
        return [dataset.removeprefix(HUB_DATASET_PREFIX)]
    local = dataset.startswith((".", "/", "~")) or dataset.endswith(LOCAL_SUFFIXES)
    local = local or Path(dataset).expanduser().exists()
    return [dataset] if dataset.count("/") == 1 and ":" not in dataset and not local else []


def _front_matter(record: dict[str, Any], summary: dict[str, Any], registry: Registry | None) -> list[str]:
    paradigms = list(record.get("paradigm", {}))
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation"]
    lines += _yaml_list("tags", ["newcompute", *paradigms])
    base = base_model(record, summary, registry)
    lines += [f"base_model: {json.dumps(base)}"] if base else []
    lines += _yaml_list("datasets", hub_datasets(record))
    return [*lines, "---", ""]


def _paradigm_section(record: dict[str, Any]) -> list[str]:
    tables = record.get("paradigm", {})
    if not tables:
        return ["## Paradigms", "", "None: the model computed in ordinary precision (a baseline run).", ""]
    versions = record.get("record", {}).get("paradigms", {})
    lines = ["## Paradigms", "", "Applied in this order; each table is the paradigm's validated config as applied.", ""]
    for name, table in tables.items():
        release = versions.get(name, {})
        plugin = f"{release.get('distribution', 'unrecorded plugin')} {release.get('version', '')}".strip()
        toml = tomli_w.dumps({"paradigm": {name: table}}).strip()
        lines += [f"### `{name}` ({plugin})", "", "```toml", toml, "```", ""]
    return lines


def _metrics_section(summary: dict[str, Any], lm_eval: dict[str, dict[str, float]]) -> list[str]:
    rows = [(label, fmt.format(summary[key])) for key, label, fmt in _METRICS if summary.get(key) is not None]
    lines = ["## Results", "", "As recorded by the run in `summary.json`.", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    lines.append("")
    if lm_eval:
        lines += ["Scores of `newcompute eval --tasks` (`lm_eval.json`):", "", "| task | metric | value |"]
        lines.append("|---|---|---|")
        for task, scores in lm_eval.items():
            lines += [f"| {task} | {metric} | {value:.4g} |" for metric, value in scores.items()]
        lines.append("")
    return lines


def _ratio(value: Any) -> str:
    return f"{value:.3g} × bf16" if isinstance(value, (int, float)) else "not estimated"


def _cost_section(costs: dict[str, Any]) -> list[str]:
    if not costs:
        return []
    label = costs.get("label", "an estimate, not a measurement")
    paradigms: dict[str, dict[str, Any]] = costs.get("paradigms", {})
    lines = ["## Cost estimates (estimates, not measurements)", "", f"Each figure is {label}.", ""]
    lines += ["| quantity | whole model | " + " | ".join(f"`{n}`" for n in paradigms) + " |"]
    lines += ["|---" * (2 + len(paradigms)) + "|"]
    total = costs.get("total", {})
    for key in QUANTITIES:
        cells = [_ratio(total.get(key)), *(_ratio(entry.get(key)) for entry in paradigms.values())]
        lines.append(f"| estimated {_QUANTITY_NAMES[key]} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, entry in paradigms.items():
        share = entry.get("share_of_macs")
        layers = "its layers" if share is None else f"its layers ({share:.1%} of the MACs)"
        scope = "the whole run" if entry.get("scope") == "run" else layers
        lines.append(f"- `{name}`, for {scope}.")
        lines += [f"  - Source: {source}" for source in entry.get("sources", [])]
        if entry.get("overridden_in_config"):
            lines.append(f"  - Set in the run's config, not estimated: {', '.join(entry['overridden_in_config'])}.")
        if entry.get("notes"):
            lines.append(f"  - Notes: {entry['notes']}")
    return [*lines, ""]


def _pinned(distribution: str, version: Any) -> str:
    """``dist==version``, or the bare name where the run recorded no version."""
    return f"{distribution}=={version}" if version else distribution


def _install_line(record: dict[str, Any]) -> str:
    versions = record.get("record", {}).get("paradigms", {})
    core = _pinned("newcompute", record.get("record", {}).get("newcompute_version"))
    plugins = sorted({_pinned(v["distribution"], v.get("version")) for v in versions.values() if "distribution" in v})
    return " ".join([core, *plugins])


def _reload_section(
    run_dir: Path, record: dict[str, Any], summary: dict[str, Any], where: str, from_hub: bool
) -> list[str]:
    has_state = (run_dir / PARADIGM_STATE_FILE).is_file()
    plain = [
        "## How to reload",
        "",
        "With plain transformers (newcompute not needed): the architecture with the trained weights, computing in "
        "ordinary precision, not under the paradigms"
        + (f" (their state, such as ranges, is kept apart in `{PARADIGM_STATE_FILE}`)." if has_state else "."),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f"model = AutoModelForCausalLM.from_pretrained({where!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
        "```",
        "",
    ]
    if summary.get("mode") == "lora" or record.get("train", {}).get("lora"):
        plain += [
            f"The LoRA adapters are in `{ADAPTER_DIR}/` (the weights above are the base model without them):",
            "",
            "```python",
            "from peft import PeftModel",
            "",
            f"model = PeftModel.from_pretrained(model, {where!r}, subfolder={ADAPTER_DIR!r})",
            "```",
            "",
        ]
    fetch = [f"folder = snapshot_download({where!r})"] if from_hub else [f"folder = {where!r}"]
    hub_import = ["from huggingface_hub import snapshot_download"] if from_hub else []
    with_nc = [
        "With newcompute, exactly as trained (the paradigms re-applied with their recorded configs, their state "
        "restored); a plugin release other than the recorded one is warned about:",
        "",
        "```bash",
        f"pip install {_install_line(record)}",
        "```",
        "",
        "```python",
        "import newcompute",
        *hub_import,
        "",
        *fetch,
        "model, tokenizer = newcompute.load(folder)",
        "```",
        "",
        "`newcompute eval FOLDER` reports its validation loss again; `newcompute train --config "
        "FOLDER/newcompute.toml --output-dir NEW` repeats the run.",
        "",
    ]
    return plain + with_nc


def card_text(run_dir: Path, repo_id: str | None = None, registry: Registry | None = None) -> str:
    """The card of the finished run in ``run_dir``; ``repo_id`` is where it will be downloaded from, if pushed."""
    record, summary = finished_run(run_dir)
    paradigms = list(record.get("paradigm", {}))
    model = record.get("model", {}).get("name", "?")
    model_class = record.get("record", {}).get("model_class", "")
    under = ", ".join(f"`{p}`" for p in paradigms) or "no paradigm (baseline)"
    title = repo_id or run_dir.resolve().name
    release = record.get("record", {}).get("newcompute_version")
    core = f"newcompute {release}" if release else "newcompute"
    lines = [
        *_front_matter(record, summary, registry),
        f"# {title}",
        "",
        f"Model `{model}`" + (f" ({model_class})" if model_class else "") + f" trained with {core} under {under}: "
        "the paradigms simulate how the model computes on other hardware or in other number formats.",
        "",
        *_paradigm_section(record),
        *_metrics_section(summary, read_lm_eval(run_dir)),
        *_cost_section(summary.get("cost_estimates", {})),
        *_reload_section(run_dir, record, summary, repo_id or str(run_dir), from_hub=repo_id is not None),
        "## Training settings",
        "",
        "```toml",
        tomli_w.dumps({k: record[k] for k in ("model", "train", "data") if k in record}).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(run_dir: Path, repo_id: str | None = None, registry: Registry | None = None) -> Path:
    """Write ``RUN/README.md`` atomically; a ``README.md`` newcompute did not write is refused, naming it."""
    text = card_text(run_dir, repo_id, registry)
    return run_files.write_text(run_dir, CARD_FILE, text)
