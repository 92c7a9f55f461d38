"""The plugin author's guide's code runs: its minimal plugin passes the conformance suite, each role example works.

Code blocks in docs/plugins.md marked ``<!-- docs-test: NAME -->`` are
extracted and executed as modules, so the guide cannot drift from the
contract.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import typer
from typer.testing import CliRunner

import newcompute as nc
from newcompute.config import resolve_paradigm
from newcompute.testing import (
    ConformanceSpec,
    build_tiny,
    check_bad_tables_rejected,
    check_resume,
    check_state_dict_round_trip,
    check_trains,
    check_transform,
    paradigm_conformance,
)

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"<!-- docs-test: (?P<name>[\w-]+) -->\n```\w+\n(?P<code>.*?)\n```", re.DOTALL)
SNIPPETS = {m["name"]: m["code"] for m in BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))}

REGISTER = '''
newcompute_api = ">=1.0,<2"


@nc.hookimpl
def newcompute_register_paradigms():
    return [nc.Paradigm("{name}", "docs example", {config}, frozenset({{nc.Role.{role}}}))]
'''


def module_from(name: str, code: str) -> ModuleType:
    """Execute ``code`` as module ``docs_example_NAME``, registered so pydantic and pickling can find it."""
    module = ModuleType(f"docs_example_{name}")
    sys.modules[module.__name__] = module
    exec(compile(code, f"{GUIDE}#{name}", "exec"), module.__dict__)
    return module


def role_example(snippet: str, paradigm: str, config: str, role: str) -> ModuleType:
    """A role example plus the registration hook the guide tells readers to take from the minimal plugin."""
    return module_from(snippet, SNIPPETS[snippet] + REGISTER.format(name=paradigm, config=config, role=role))


def test_the_guide_has_every_tested_block() -> None:
    expected = {"minimal", "pyproject", "layer", "attention", "optimizer", "commands", "ranks", "data-source"}
    assert set(SNIPPETS) == expected


def test_pyproject_declares_the_minimal_plugin_entry_point() -> None:
    import tomllib

    project = tomllib.loads(SNIPPETS["pyproject"])
    assert project["project"]["entry-points"]["newcompute"] == {"rounded": "newcompute_rounded.plugin"}
    assert project["build-system"] == {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"}


TestDocsMinimalPluginConformance = paradigm_conformance(
    ConformanceSpec(
        plugin=module_from("minimal", SNIPPETS["minimal"]),
        paradigm="rounded",
        bad_tables=[{"number_format": "float8"}],
        identity_table={"number_format": "float32"},
    ),
    entry_point=False,
)


def test_layer_example_quantizes_weights_and_trains() -> None:
    spec = ConformanceSpec(
        plugin=role_example("layer", "int-weights", "IntWeightConfig", "LAYER"), paradigm="int-weights",
        bad_tables=[{"bits": 1}], table={"bits": 4},
    )
    check_bad_tables_rejected(spec)
    check_transform(spec, "tiny-gpt2")
    check_state_dict_round_trip(spec, "tiny")
    check_trains(spec, "tiny-gpt2")
    registry = spec.registry()
    model = build_tiny("tiny")
    nc.apply(model, [spec.use(registry)], registry=registry)
    layer = model.model.layers[0].mlp.up_proj
    with torch.no_grad():
        quantized = layer(torch.eye(layer.in_features)).t()
    assert type(layer).__name__ == "IntWeightLinear"
    assert max(len(row.unique()) for row in quantized) <= 15, "4 bits allow the 15 levels -7..7 per row"
    assert torch.allclose(quantized.abs().amax(dim=1), layer.weight.abs().amax(dim=1))


def test_attention_example_intercepts_every_attention_module_and_trains() -> None:
    spec = ConformanceSpec(
        plugin=role_example("attention", "int8-attention", "Int8AttentionConfig", "ATTENTION"),
        paradigm="int8-attention",
    )
    check_transform(spec, "tiny")
    check_trains(spec, "tiny-qwen2")


def test_optimizer_example_scales_group_learning_rates_and_resumes() -> None:
    spec = ConformanceSpec(
        plugin=role_example("optimizer", "scaled-adam", "ScaledAdamConfig", "OPTIMIZER"), paradigm="scaled-adam"
    )
    check_trains(spec, "tiny-gpt2")
    check_resume(spec, "tiny")
    registry = spec.registry()
    model = build_tiny("tiny")
    nc.apply(model, [resolve_paradigm(registry, "scaled-adam", {})], registry=registry)
    optimizer = nc.build_optimizer(model, nc.OptimizerSettings(lr=0.01, weight_decay=0.1), registry=registry)
    groups = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert groups == {"hidden_matrix": (0.02, 0.1), "embedding": (0.005, 0.0), "norm": (0.01, 0.0)}


def test_commands_example_adds_a_subcommand() -> None:
    registry = nc.Registry()
    registry.register(module_from("commands", SNIPPETS["commands"]), name="docs-commands")
    app = typer.Typer()
    registry.add_commands(app)

    @app.callback()
    def root() -> None:
        """Lets Typer keep subcommand names when an app has a single command."""

    result = CliRunner().invoke(app, ["rounded-formats"])
    assert result.exit_code == 0 and result.output.strip() == "bfloat16 float16 float32"


def test_the_several_processes_example_runs_on_two_gloo_ranks(tmp_path: Path, monkeypatch) -> None:
    """Its ranks are spawned and import the function by module name, so the snippet becomes a real file."""
    (tmp_path / "docs_example_ranks.py").write_text(SNIPPETS["ranks"], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import docs_example_ranks

    docs_example_ranks.test_ranks_agree("gloo")


def test_data_source_example_reads_csv_rows_and_refuses_a_missing_column(tmp_path: Path) -> None:
    from newcompute.config import DataSettings
    from newcompute.tokenizer import byte_tokenizer
    from newcompute.train.packing import pack
    from newcompute.train.sources import open_source

    registry = nc.Registry()
    record = registry.register(module_from("data_source", SNIPPETS["data-source"]), name="docs-csv")
    assert record.status == "ok" and record.data_sources == ["csv"]
    (tmp_path / "notes.csv").write_text('id,text\n1,ab\n2,"c,d"\n', encoding="utf-8")
    settings = DataSettings(dataset=str(tmp_path / "notes.csv"), validation_fraction=0.5)
    corpus = pack(open_source(settings, registry), byte_tokenizer(), 3, settings, 0)
    # a b EOS c , d EOS → blocks [a b EOS] [c , d]; the first is held out
    assert corpus.validation.tolist() == [[97, 98, 256]] and corpus.train.tolist() == [[99, 44, 100]]
    other = DataSettings(dataset=str(tmp_path / "notes.csv"), text_column="body")
    with pytest.raises(nc.ConfigError, match=r"has no column 'body' \(it has: id, text\)"):
        pack(open_source(other, registry), byte_tokenizer(), 3, other, 0)
