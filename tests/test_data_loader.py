"""The DataLoader feed: the loop's batches in the loop's order, whatever the number of workers."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

import newcompute as nc
from newcompute.config import DataSettings
from newcompute.tokenizer import byte_tokenizer
from newcompute.train.blocks import PackedBlocks
from newcompute.train.loader import BatchFeed, Slicing
from newcompute.train.packing import BlockOrder
from newcompute.train.sources import open_source
from newcompute.train.streaming import StreamedBlocks, read_head

CPU = torch.device("cpu")


def _packed() -> PackedBlocks:
    train = np.arange(40 * 3, dtype=np.int32).reshape(40, 3)  # block i holds 3i, 3i+1, 3i+2
    return PackedBlocks(train, BlockOrder(40, seed=5))


def _drain(feed: BatchFeed, count: int) -> list[list[list[int]]]:
    return [feed.next().tolist() for _ in range(count)]


def test_process_slices_interleave_micro_batches_of_the_global_batch() -> None:
    # batch 8 = micro 2 × accumulation 2 × 2 processes: micro-step m of process r takes samples (2m + r)·2 …
    firsts = [[Slicing(8, 2, 2, 2, rank).first(k) for k in range(4)] for rank in (0, 1)]
    assert firsts == [[0, 4, 8, 12], [2, 6, 10, 14]]


def test_workers_give_the_same_batches_in_the_same_order() -> None:
    slicing = Slicing(4, 2, 2, 1, 0)
    order = BlockOrder(40, seed=5)
    expected = [(_packed().train[order.indices(2 * k, 2)]).tolist() for k in range(2, 12)]
    for workers in (0, 2):
        feed = BatchFeed(_packed(), slicing, steps=5, device=CPU, workers=workers, pin=False)
        feed.start(1)  # from optimizer step 1: micro-batch 2 on
        assert _drain(feed, 10) == expected
        assert feed.state(3) == {"kind": "packed", "sample": 12}
        feed.close()


def test_ctrl_c_sent_to_the_workers_too_does_not_stop_them() -> None:
    """A terminal's Ctrl-C goes to the whole process group; the loop stops on its own terms and still needs
    the next batch to probe the loss of its last checkpoint."""
    slicing = Slicing(4, 2, 2, 1, 0)
    feed = BatchFeed(_packed(), slicing, steps=20, device=CPU, workers=2, pin=False)
    feed.start(0)
    first = _drain(feed, 2)
    workers = feed._batches._workers  # type: ignore[union-attr]  # torch's worker processes
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)
    time.sleep(0.5)
    assert all(worker.is_alive() for worker in workers)
    rest = _drain(feed, 30)
    feed.close()
    reference = BatchFeed(_packed(), slicing, steps=20, device=CPU, workers=0, pin=False)
    reference.start(0)
    assert first + rest == _drain(reference, 32)


def test_a_stream_worker_hands_over_the_position_after_each_step(tmp_path: Path) -> None:
    rows = [{"text": f"row {i} " + "ab " * (i % 4)} for i in range(200)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataSettings(dataset=str(tmp_path / "d.jsonl"), streaming=True, validation_max_blocks=2)
    source = open_source(data, nc.Registry())

    def stream() -> StreamedBlocks:
        return StreamedBlocks(source, byte_tokenizer(), 8, data, read_head(source, byte_tokenizer(), 8, data))

    slicing = Slicing(4, 2, 2, 1, 0)
    in_process = BatchFeed(stream(), slicing, steps=6, device=CPU, workers=0, pin=False)
    in_process.start(0)
    expected = _drain(in_process, 6)
    in_process.close()
    worker = BatchFeed(stream(), slicing, steps=6, device=CPU, workers=1, pin=False)
    worker.start(0)
    assert _drain(worker, 6) == expected
    position = worker.state(3)
    worker.close()
    assert position["kind"] == "stream" and position["sample"] == 12
    resumed = stream()
    resumed.restore(position, 12)
    assert resumed.take(12, 4).tolist() == [b for batch in _drain_from(stream(), slicing, 6, 8) for b in batch]


def _drain_from(blocks: StreamedBlocks, slicing: Slicing, start: int, end: int) -> list[list[list[int]]]:
    feed = BatchFeed(blocks, slicing, steps=6, device=CPU, workers=0, pin=False)
    feed.start(0)
    batches = _drain(feed, end)
    feed.close()
    return batches[start:end]


def test_batches_are_pinned_on_cuda_unless_micro_steps_are_captured() -> None:
    from newcompute.train.loader import pins_batches

    cuda = torch.device("cuda", 0)
    assert pins_batches(cuda, cuda_graphs=False) and not pins_batches(cuda, cuda_graphs=True)
    assert not pins_batches(CPU, cuda_graphs=False)
