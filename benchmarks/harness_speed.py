"""Wall-clock benchmarks of the harness itself; the output goes into BENCHMARKS.md.

    python benchmarks/harness_speed.py            # all three parts (about 15 minutes on 2 cores)
    python benchmarks/harness_speed.py --part overhead

Parts:
- default: the README's offline default run from an empty cache (target <= 10 minutes);
- overhead: how much softmax + energy add to a cmg_e run on one partition, measured as
  the wall-clock of two runs from an empty cache and from the trial records (target < 5%);
- metrics: bench.metrics against scikit-learn on 10^6 scores (target >= 10x).
Every run uses fresh temporary folders, so nothing is read from an earlier cache.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_RUN = ["--methods", "softmax,energy,cmg_s,cmg_e", "--protocol", "setting1", "--datasets", "fashion_mnist",
               "--scale", "demo"]


def timed_run(arguments: list[str]) -> tuple[float, str, Path]:
    """Run `bench run` in a fresh result folder and cache; return seconds, stdout and the folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    command = [sys.executable, "-m", "bench", "run", *arguments, "--out", str(folder / "out"),
               "--cache", str(folder / "cache")]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmark run failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return seconds, result.stdout, folder / "out"


def part_default() -> None:
    seconds, table, _ = timed_run(DEFAULT_RUN)
    print(f"## Default run\n\n`bench run {' '.join(DEFAULT_RUN)}` (Ray, empty cache): **{seconds / 60:.2f} min** "
          f"({seconds:.0f} s)\n\n{table}\n")


def part_overhead() -> None:
    from bench.store import ResultStore

    one_partition = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5",
                     "--scale", "demo", "--executor", "local"]
    alone, _, _ = timed_run(["--methods", "cmg_e", *one_partition])
    together, _, out = timed_run(["--methods", "softmax,energy,cmg_e", *one_partition])
    frame = ResultStore(out).frame().set_index("method")
    own = frame.loc[["softmax", "energy"], ["fit_s", "score_s"]].to_numpy().sum()
    cmg_total = frame.loc["cmg_e", "total_s"]
    print("## What softmax + energy add to a cmg_e run (partition 0-5, demo scale, local executor)\n")
    print("| measure | seconds | added |")
    print("|---|---:|---:|")
    print(f"| wall-clock, cmg_e alone | {alone:.1f} | |")
    print(f"| wall-clock, softmax+energy+cmg_e | {together:.1f} | {100 * (together - alone) / alone:+.1f}% |")
    print(f"| records: softmax+energy fit+score vs cmg_e total (incl. shared models) | {own:.2f} | "
          f"{100 * own / cmg_total:.2f}% |\n")


def part_metrics() -> None:
    print("## Metrics on 10^6 scores: bench.metrics vs scikit-learn\n")
    sys.stdout.flush()
    subprocess.run([sys.executable, str(Path(__file__).with_name("metrics_speed.py"))], check=True)


PARTS = {"default": part_default, "overhead": part_overhead, "metrics": part_metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append", help="run only these parts")
    for name in parser.parse_args().part or list(PARTS):
        PARTS[name]()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
