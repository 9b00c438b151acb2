"""Wall-clock of the fast CLI commands (issue 14): help, listings and a table, each in a fresh process.

    python benchmarks/cli_speed.py             # best of 5 per command (about a minute)
    python benchmarks/cli_speed.py --repeat 3

Each command runs `python -m bench ...` in a subprocess, single-threaded, and the best wall-clock of
`--repeat` runs is reported (the target is under 1 s). A command's exit status is shown beside its time:
`table 1` over a folder without results fails on purpose with its one-line error, which is part of what
is timed. Prints a markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

COMMANDS = [
    ["--help"],
    ["list", "methods"],
    ["list", "protocols"],
    ["list", "models"],
    ["list", "datasets"],
    ["list", "recipes"],
    ["table", "1", "--out", "results"],
]


def best_of(arguments: list[str], repeat: int) -> tuple[float, int]:
    """(fastest wall-clock in seconds, exit status) of `python -m bench <arguments>` over `repeat` runs."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    times, status = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "bench", *arguments], capture_output=True, env=environment)
        times.append(time.perf_counter() - start)
        status = result.returncode
    return min(times), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the best is reported (default 5)")
    args = parser.parse_args()
    print(f"| command | best of {args.repeat} (s) | exit status |")
    print("|---|---:|---:|")
    for arguments in COMMANDS:
        seconds, status = best_of(arguments, args.repeat)
        print(f"| `bench {' '.join(arguments)}` | {seconds:.2f} | {status} |", flush=True)


if __name__ == "__main__":
    main()
