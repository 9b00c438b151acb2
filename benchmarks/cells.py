"""Run a study's (seed, partition) cells as separate `bench run` processes, several at a time, on a machine
without Ray (a lent GPU box cannot install it); stop starting cells at a deadline.

    python benchmarks/cells.py --workers 10 --deadline-s 540 --seeds 3,4 --partitions 0-5,1-6 -- \\
        --methods osrci --protocol setting1 --datasets fashion_mnist --scale demo --out out \\
        --recipe osrci.gan.epochs=12,osrci.classifier.epochs=12

Everything after `--` goes to every `bench run` unchanged; each cell adds `--seeds S --partitions P
--executor local` and, unless given there, `--cpus-per-trial` (the machine's cores over the workers).
With `--point NAME=OVERRIDES` (repeatable, as in convergence.py) a cell runs one `bench run --recipe
OVERRIDES` per point, in order, in its worker slot: the two ends of a ladder step then come from one
device, and a later point reuses the models an earlier one cached (a 128-epoch CVAE point, the
classifier of the 64-epoch one). A started cell runs all its points, also past the deadline.
Cells share the result store and the model cache, as any two runs may: a finished trial is written
when it finishes, so a cell cut off by the machine going away loses only itself. With a GPU visible the
local executor trains on it; ten demo-scale cells fit on one H200 at once.
Prints one line per cell and point (exit status and minutes) and exits non-zero if any cell failed or was not started.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def cell_command(seed: str, partition: str, run_args: list[str], cpus: int) -> list[str]:
    command = [sys.executable, "-m", "bench", "run", *run_args, "--seeds", seed, "--partitions", partition,
               "--executor", "local"]
    if "--cpus-per-trial" not in run_args:
        command += ["--cpus-per-trial", str(cpus)]
    return command


def parse_points(points: list[str]) -> list[tuple[str, list[str]]]:
    """(name, extra `bench run` arguments) per point; one unnamed point adding nothing when none is given."""
    if not points:
        return [("", [])]
    return [(name, ["--recipe", overrides]) for name, _, overrides in (p.partition("=") for p in points)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", required=True, help="comma list")
    parser.add_argument("--partitions", required=True, help="comma list, e.g. 0-5,1-6")
    parser.add_argument("--point", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a recipe each cell runs, in the order given (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cells at once (default: cores)")
    parser.add_argument("--deadline-s", type=float, default=float("inf"),
                        help="start no cell after this many seconds (running cells finish)")
    parser.add_argument("--logs", default="cell-logs", help="folder for each cell's output (default: cell-logs)")
    args, run_args = parser.parse_known_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    run_args = [a for a in run_args if a != "--"]
    if any("=" not in p for p in args.point):
        parser.error("--point takes NAME=OVERRIDES, e.g. v64=cvae.epochs=64")
    if args.point and "--recipe" in run_args:
        parser.error("give the recipe either with --point or after --, not both")
    points = parse_points(args.point)
    cells = [(s, p) for s in args.seeds.split(",") for p in args.partitions.split(",")]
    cpus = max(1, (os.cpu_count() or 1) // args.workers)
    os.makedirs(args.logs, exist_ok=True)

    def start(seed, partition, point):
        name, extra = points[point]
        log = open(os.path.join(args.logs, f"s{seed}_{partition}{'_' + name if name else ''}.log"), "w")
        process = subprocess.Popen(cell_command(seed, partition, run_args + extra, cpus), stdout=log,
                                   stderr=subprocess.STDOUT)
        return process, time.monotonic(), log, point

    began_at, waiting, running, done = time.monotonic(), list(cells), {}, {}
    while waiting or running:
        while waiting and len(running) < args.workers and time.monotonic() - began_at < args.deadline_s:
            cell = waiting.pop(0)
            running[cell] = start(*cell, 0)
        if time.monotonic() - began_at >= args.deadline_s:
            for cell in waiting:
                for point in range(len(points)):
                    done[cell + (point,)] = ("not started", 0.0)
            waiting = []
        for cell, (process, began, log, point) in list(running.items()):
            if process.poll() is not None:
                log.close()
                done[cell + (point,)] = (f"exit {process.returncode}", (time.monotonic() - began) / 60)
                del running[cell]
                if point + 1 < len(points):
                    running[cell] = start(*cell, point + 1)
        time.sleep(1)
    for (seed, partition, point), (status, minutes) in sorted(done.items()):
        name = points[point][0]
        print(f"seed {seed} {partition}{' ' + name if name else ''}: {status}, {minutes:.1f} min")
    return 0 if all(status == "exit 0" for status, _ in done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
