"""How long a run takes to start on a large local text file: tokenizing it, and reading it back from the token cache.

Writes ``--megabytes`` of English-like text (words drawn with a fixed seed
from the text of Python's ``pydoc_data.topics``) to one ``.txt`` file, then
runs ``newcompute train --model tiny --init scratch --steps 1`` on it three
times as a user would, each a fresh process timed from start to exit:
with ``--no-cache`` (everything tokenized), then with an empty token cache
(tokenized and stored), then again (read from the cache). The model is tiny,
so the times are start-up: imports, reading, tokenizing, packing; a first
run reads only 100k tokens, which is the start-up every command pays. Ratios
are to the ``--no-cache`` run measured in the same invocation.

    python benchmarks/data.py                   # 100 MB
    python benchmarks/data.py --megabytes 10    # a quick look
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_corpus(path: Path, megabytes: float) -> None:
    from pydoc_data.topics import topics

    words = " ".join(topics.values()).split()
    rng = random.Random(0)
    target = int(megabytes * 1e6)
    with path.open("w", encoding="utf-8") as out:
        written = 0
        while written < target:
            line = " ".join(rng.choices(words, k=200)) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))


def timed_run(corpus: Path, cache: Path, run_dir: Path, extra: list[str]) -> float:
    command = [
        sys.executable, "-m", "newcompute", "train", "--model", "tiny", "--init", "scratch", "--steps", "1",
        "--batch-size", "2", "--micro-batch-size", "2", "--block-size", "256", "--dataset", str(corpus),
        "-o", str(run_dir), "--overwrite", *extra,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NEWCOMPUTE_CACHE": str(cache)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        corpus = root / "corpus.txt"
        write_corpus(corpus, args.megabytes)
        size = corpus.stat().st_size / 1e6
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"{size:.1f} MB of text, {cores} cores this process may use, Python {sys.version.split()[0]}")
        small = timed_run(corpus, root / "cache", root / "run", ["--no-cache", "--max-tokens", "100000"])
        print(f"  start-up alone (first 100k tokens):   {small:7.1f} s")
        no_cache = timed_run(corpus, root / "cache", root / "run", ["--no-cache"])
        print(f"  --no-cache (tokenized, not stored):   {no_cache:7.1f} s  1.00×")
        first = timed_run(corpus, root / "cache", root / "run", [])
        print(f"  empty cache (tokenized and stored):   {first:7.1f} s  {first / no_cache:.2f}×")
        second = timed_run(corpus, root / "cache", root / "run", [])
        print(f"  second run (tokens from the cache):   {second:7.1f} s  {second / no_cache:.2f}×")


if __name__ == "__main__":
    main()
