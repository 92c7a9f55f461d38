"""Fused optical attention on a CUDA GPU against the two-product reference (run on the CPU)."""

from __future__ import annotations

import pytest
import torch
from newcompute_optical.ops import attention as fused_attention
from optical_support import compare_fused_attention, optical, tiny, tokens

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    ("dtype", "q_len", "k_len", "causal", "training", "first_call"),
    [
        (torch.float32, 300, 300, True, True, False),
        (torch.bfloat16, 300, 300, True, True, False),
        (torch.bfloat16, 300, 300, True, True, True),
        (torch.bfloat16, 200, 333, False, True, False),
        (torch.bfloat16, 7, 333, True, False, False),
        (torch.bfloat16, 1, 333, False, False, False),
    ],
)
def test_fused_attention_matches_the_reference(
    dtype: torch.dtype, q_len: int, k_len: int, causal: bool, training: bool, first_call: bool
) -> None:
    tolerance = 0.02 if dtype == torch.float32 else 0.05
    compare_fused_attention(
        "cuda", dtype, q_len, k_len, causal, training, dim=64, grad_tolerance=tolerance, first_call=first_call
    )


def test_fused_attention_is_captured_in_a_cuda_graph_without_host_reads() -> None:
    """Ranges and counters stay on the device: a forward and backward replay as a graph and move them."""
    model = tiny("llama").cuda().train()
    optical(model)
    ids = tokens().cuda()
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
    matmuls = model.model.layers[0].self_attn.newcompute_matmuls
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        model(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.current_stream().wait_stream(stream)
    calls, output_range = matmuls.scores.calls.item(), matmuls.scores.output_range.clone()
    graph.replay()
    assert matmuls.scores.calls.item() == calls + 1
    assert not torch.equal(matmuls.scores.output_range, output_range)


def test_training_takes_the_fused_path_and_tracks_the_two_products(monkeypatch: pytest.MonkeyPatch) -> None:
    losses = {}
    for fused in (True, False):
        model = tiny("llama", seed=3).cuda().train()
        optical(model)
        taken = []
        original = fused_attention.attention

        def counted(*args: object, _original=original, _taken=taken) -> torch.Tensor:
            _taken.append(1)
            return _original(*args)

        monkeypatch.setattr(fused_attention, "attention", counted)
        monkeypatch.setattr(fused_attention, "applies", lambda *args, _fused=fused: _fused)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ids = tokens(batch=4, length=32).cuda()
        trace = []
        for _ in range(8):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            trace.append(loss.item())
        layers = model.config.num_hidden_layers
        assert len(taken) == (8 * layers if fused else 0)
        losses[fused] = torch.tensor(trace)
    assert losses[True][-1] < losses[True][0] - 0.3
    torch.testing.assert_close(losses[True], losses[False], rtol=0.03, atol=0.03)
