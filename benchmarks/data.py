"""How long a run takes to start on a large local text file: tokenizing it, reading it back from the token cache,
or streaming it.

Writes ``--megabytes`` of English-like text (words drawn with a fixed seed
from the text of Python's ``pydoc_data.topics``) to one ``.txt`` file, then
runs ``newcompute train --model tiny --init scratch --steps 1`` on it as a
user would, each a fresh process: with ``--no-cache`` (everything tokenized,
by datasets.map over the cores when datasets is installed), then with an
empty token cache (tokenized and stored), then again (read from the cache),
then with ``--streaming`` (only the first blocks tokenized). Each is timed
to its first optimizer step (the moment it prints ``step 1/1``) and to its
exit. The model is tiny, so the times are start-up: imports, reading,
tokenizing, packing; a first run reads only 100k tokens, which is the
start-up every command pays, and ``import newcompute.train`` alone is timed
too. Ratios are to the ``--no-cache`` run measured in the same invocation.

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


def timed_run(corpus: Path, cache: Path, run_dir: Path, extra: list[str]) -> tuple[float, float]:
    """Seconds from launch to the first step's line, and to exit."""
    command = [
        sys.executable, "-m", "newcompute", "train", "--model", "tiny", "--init", "scratch", "--steps", "1",
        "--batch-size", "2", "--micro-batch-size", "2", "--block-size", "256", "--dataset", str(corpus),
        "-o", str(run_dir), "--overwrite", *extra,
    ]
    env = {**os.environ, "NEWCOMPUTE_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    started = time.perf_counter()
    first_step = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as run:
        assert run.stdout is not None and run.stderr is not None
        for line in run.stdout:
            if first_step is None and line.startswith("step 1/"):
                first_step = time.perf_counter() - started
        errors = run.stderr.read()
    seconds = time.perf_counter() - started
    if run.returncode != 0 or first_step is None:
        raise SystemExit(f"run failed (exit {run.returncode}):\n{errors[-2000:]}")
    return first_step, seconds


def timed_import() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import newcompute.train"], check=True, capture_output=True)
    return time.perf_counter() - started


def show(label: str, times: tuple[float, float], reference: float | None) -> None:
    ratio = f"  {times[1] / reference:.2f}×" if reference else ""
    print(f"  {label:<38} first step {times[0]:6.1f} s   exit {times[1]:6.1f} s{ratio}")


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
        print(f"  import newcompute.train alone:         {timed_import():6.1f} s")
        run = [root / "cache", root / "run"]
        small = timed_run(corpus, *run, ["--no-cache", "--max-tokens", "100000"])
        show("start-up alone (first 100k tokens):", small, None)
        no_cache = timed_run(corpus, *run, ["--no-cache"])
        show("--no-cache (tokenized, not stored):", no_cache, no_cache[1])
        show("empty cache (tokenized and stored):", timed_run(corpus, *run, []), no_cache[1])
        show("second run (tokens from the cache):", timed_run(corpus, *run, []), no_cache[1])
        show("--streaming (first blocks only):", timed_run(corpus, *run, ["--streaming", "--no-cache"]), no_cache[1])


if __name__ == "__main__":
    main()
