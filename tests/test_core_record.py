"""Saving a transformed model and rebuilding it exactly, paradigm state included."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny

import newcompute as nc
from newcompute.config import RunConfig, resolve_paradigm
from newcompute.record import RECORD_FILE, load, save_transformed
from newcompute.tokenizer import byte_tokenizer


def test_round_trip_restores_weights_buffers_and_paradigms(tmp_path: Path, registry: nc.Registry) -> None:
    model = tiny("tiny-gpt2")
    nc.apply(model, [resolve_paradigm(registry, "scale", {"factor": 1.5}), "exact-attn"], registry=registry)
    ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        model(input_ids=ids)
        expected = model(input_ids=ids).logits
    save_transformed(model, byte_tokenizer(), RunConfig(), tmp_path)
    assert "factor = 1.5" in (tmp_path / RECORD_FILE).read_text()
    loaded, tokenizer = load(tmp_path, registry=registry)
    layer = loaded.get_submodule("transformer.h.0.attn.c_attn")
    assert layer.factor == 1.5 and int(layer.calls) == 2
    assert nc.report_of(loaded).attention["exact-attn"] == ["transformer.h.0.attn", "transformer.h.1.attn"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=ids).logits, expected, rtol=0, atol=0)
    assert tokenizer.decode(tokenizer("hi")["input_ids"]) == "hi"


def test_loading_a_folder_not_written_by_newcompute_is_refused(tmp_path: Path, registry: nc.Registry) -> None:
    with pytest.raises(nc.ConfigError, match="has no newcompute.toml"):
        load(tmp_path, registry=registry)


def test_changed_paradigms_are_detected_on_load(tmp_path: Path, registry: nc.Registry) -> None:
    model = tiny()
    nc.apply(model, ["scale"], registry=registry)
    save_transformed(model, byte_tokenizer(), RunConfig(), tmp_path)
    record = tmp_path / RECORD_FILE
    record.write_text(record.read_text().replace("[paradigm.scale]", "[paradigm.scale2]"))
    loaded, _ = load(tmp_path, registry=registry)
    assert nc.report_of(loaded).paradigms == ["scale2"]
    record.write_text(record.read_text().replace("[paradigm.scale2]", "[paradigm.exact-attn]"))
    with pytest.raises(nc.RunError, match="saved weights do not match"):
        load(tmp_path, registry=registry)
