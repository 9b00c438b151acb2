"""Convergence study: does more training change the comparison?

Runs Setting 1 on Fashion-MNIST at a ladder of recipes, each one doubling the training of
the previous one (every `--recipe` override of a point is applied on top of `--scale`),
then prints, per method, the mean AUROC over partitions at every point, the cost of each
point, and for every step of the ladder (on the cells both its points ran) the largest change of a
method's mean (and whose it is), the pairs of methods that swap order although their means differ by
more than `--swap-margin` points, how many of its cells trained their shared models in one place
(machine, kernels, threads, device) at both ends, and each method's change paired over cells (with how
many cells rose, and the extremes); `--per-cell` adds every cell's change.
The reference recipe is the cheapest point whose next doubling changes no mean by more than
`--tolerance` and swaps no such pair. A step whose paired change of some method is too noisy to
tell (a 95% interval wider than +-`--swap-margin`) is "undecided": it needs more seeds, not more
training, and is never chosen.

    python benchmarks/convergence.py --out results/convergence --cache ~/.cache/bench/models \
        --point e4=classifier.epochs=4,cvae.epochs=4,cac.stage.epochs=4 \
        --point e8=classifier.epochs=8,cvae.epochs=8,cac.stage.epochs=8 \
        --point e16=classifier.epochs=16,cvae.epochs=16,cac.stage.epochs=16

Every point is an ordinary `bench run`, so its trials land in `--out` and its models in the
cache, where the reference scale and later runs reuse them.
"""
from __future__ import annotations

import argparse
import itertools
import subprocess
import sys

import pandas as pd
from tabulate import tabulate

from bench.compare import Comparison, compare, paired_differences
from bench.method import parse_methods
from bench.recipes import parse_overrides
from bench.reports import for_recipe
from bench.store import ResultStore

# The classifier's post-hoc scores with the most distinct behaviour, CMG and CAC: the methods
# whose shared models the ladder trains (classifier, CVAE, CAC). Others can be added with --methods.
METHODS = "softmax,energy,mahalanobis,react,knn,cmg_s,cmg_e,cac"


def run_point(args, overrides: str) -> None:
    command = [sys.executable, "-m", "bench", "run", "--methods", args.methods, "--protocol", "setting1",
               "--datasets", "fashion_mnist", "--scale", args.scale, "--seeds", args.seeds, "--out", args.out,
               "--executor", args.executor]
    command += ["--recipe", overrides] if overrides else []
    command += ["--partitions", args.partitions] if args.partitions else []
    command += ["--cache", args.cache] if args.cache else []
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def mean_auroc(frame: pd.DataFrame) -> pd.Series:
    """Mean AUROC (%) per method over partitions, seeds averaged first."""
    return frame.groupby(["method", "partition"])["auroc"].mean().groupby("method").mean() * 100


def on_shared_cells(first: pd.DataFrame, second: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """Both points' rows on the (partition, seed) cells both ran, and those cells, so that a step whose second
    point is still running compares like with like: its means, not only its paired changes."""
    cells = first[["partition", "seed"]].drop_duplicates().merge(second[["partition", "seed"]].drop_duplicates())
    return first.merge(cells), second.merge(cells), list(cells.itertuples(index=False, name=None))


def summarise(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, float]:
    """Mean AUROC per method over partitions (seeds averaged first), mean accuracy, and the point's
    cost in core-minutes: every distinct shared model once, plus every trial's own fit and score time."""
    means = mean_auroc(frame)
    accuracy = frame.groupby("method")["accuracy"].mean() * 100
    store_rows = frame[["trial_id", "fit_s", "score_s"]]
    own = float(store_rows["fit_s"].sum() + store_rows["score_s"].sum())
    return means, accuracy, own


def shared_seconds(records: list[dict], trial_ids: set[str]) -> float:
    """Training time of every distinct shared model the trials used (each counted once)."""
    seen: dict[str, float] = {}
    for record in records:
        if record["trial_id"] in trial_ids:
            for item in record["timing"]["shared_models"].values():
                seen[item["key"]] = item["train_seconds"]
    return sum(seen.values())


def training_places(records: list[dict], trial_ids: set[str]) -> dict[tuple[str, int], dict | None]:
    """Per (partition, seed) cell: each kind of shared model its trials used, with the set of places it trained
    in (device, platform, CPU model, kernels and threads, GPU); None for a cell some of whose records predate
    that provenance, or whose models trained on a CPU without saying its kernels and threads."""
    places: dict = {}
    for record in records:
        cell = (record["partition"], record["seed"])
        if record["trial_id"] not in trial_ids or places.get(cell, {}) is None:
            continue
        found = places.setdefault(cell, {})
        for kind, model in record["timing"]["shared_models"].items():
            where = model.get("trained_on")
            cpu = (where or {}).get("cpu") or {}
            if where is None or (where.get("device") == "cpu" and not cpu):
                places[cell] = None
                break
            found.setdefault(kind, set()).add((where.get("device"), where.get("platform"), cpu.get("model"),
                                               cpu.get("capability"), cpu.get("threads"), where.get("gpu")))
    return places


def trained_alike(first: dict, second: dict, cells: list[tuple[str, int]]) -> str:
    """"2 of 6": the cells where each kind of shared model trained in one place at both ends of a step.
    Training is not bitwise reproducible across machines, kernels or thread counts, so a cell whose ends
    differ there pairs less tightly: its change carries a re-run's noise on top of the step's."""
    alike = unrecorded = 0
    for cell in cells:
        before, after = first.get(cell), second.get(cell)
        if before is None or after is None:
            unrecorded += 1
        elif before.keys() == after.keys() and all(len(before[kind]) == 1 and before[kind] == after[kind]
                                                   for kind in before):
            alike += 1
    return f"{alike} of {len(cells)}" + (f" ({unrecorded} unrecorded)" if unrecorded else "")


def point_table(means: dict, accuracy: dict, costs: dict) -> pd.DataFrame:
    """Methods x points of mean AUROC, then closed-set accuracies and the cost.

    Accuracy rows: the classifier's (read from softmax, when it ran), and that of every method whose
    accuracy differs from it at some point: those that train or fine-tune a network of their own.
    """
    table = pd.DataFrame(means).round(1)
    accuracy = pd.DataFrame(accuracy).round(1)
    classifier = accuracy.loc["softmax"] if "softmax" in accuracy.index else None
    if classifier is not None:
        table.loc["(accuracy, classifier)"] = classifier
    for method in accuracy.index.drop("softmax", errors="ignore"):
        if classifier is None or not accuracy.loc[method].equals(classifier):
            table.loc[f"(accuracy, {method})"] = accuracy.loc[method]
    table.loc["(cost, core-minutes)"] = pd.Series(costs).round(1)
    return table


def stable_step(before: pd.Series, after: pd.Series, margin: float) -> tuple[float, str, list[str]]:
    """Largest change of a method's mean, the method that made it, and the pairs that swap although they
    differ by > margin."""
    common = before.index.intersection(after.index)
    moves = (after[common] - before[common]).abs()
    shift, mover = float(moves.max()), str(moves.idxmax())
    swaps = []
    for a, b in itertools.combinations(common, 2):
        gap_before, gap_after = before[a] - before[b], after[a] - after[b]
        if gap_before * gap_after < 0 and max(abs(gap_before), abs(gap_after)) > margin:
            swaps.append(f"{a}/{b} ({gap_before:+.1f} -> {gap_after:+.1f})")
    return shift, mover, swaps


def _both_points(frames: dict[str, pd.DataFrame], method: str, first: str, second: str) -> pd.DataFrame:
    """`method`'s rows at both points, each point standing in as the method, for the paired comparison."""
    return pd.concat([frames[name][frames[name]["method"] == method].assign(method=name) for name in (first, second)])


def paired_change(frames: dict[str, pd.DataFrame], method: str, first: str, second: str,
                  metric: str = "auroc") -> Comparison:
    """`method` at `second` minus at `first`, paired by (partition, seed) cell, with a bootstrap interval."""
    return compare(_both_points(frames, method, first, second), second, first, metric)


def cell_changes(frames: dict[str, pd.DataFrame], method: str, first: str, second: str,
                 metric: str = "auroc") -> pd.Series:
    """`method` at `second` minus at `first` in points, per (partition, seed) cell both ran: which cells make a
    mean change."""
    pairs = paired_differences(_both_points(frames, method, first, second), second, first, metric)
    return pairs.set_index(["partition", "seed"])["difference"] * 100


def cell_spread(result: Comparison) -> str:
    """"11 of 14 up, -0.5 to +6.3": whether a mean change is every cell's or a few cells', in points."""
    up = result.losses if result.lower_is_better else result.wins  # cells where second - first > 0
    return (f"{up} of {result.cells} up, {result.min_difference * 100:+.1f} to "
            f"{result.max_difference * 100:+.1f}")


def format_change(result: Comparison) -> str:
    """"+1.2 [-0.3, +2.5]": points of AUROC."""
    if result.ci_low is None:
        return f"{result.mean_difference * 100:+.1f}"
    return f"{result.mean_difference * 100:+.1f} [{result.ci_low * 100:+.1f}, {result.ci_high * 100:+.1f}]"


def step_verdict(shift: float, swaps: list[str], changes: list[Comparison], tolerance: float, margin: float) -> str:
    """"no" when a mean moves by more than the tolerance or two methods swap; "undecided" when the means
    pass but some method's change is measured too loosely to rule out a swap-sized move (its interval's
    half-width exceeds the swap margin, or there is no interval); else "yes"."""
    if shift > tolerance or swaps:
        return "no"
    for result in changes:
        if result.ci_low is None or (result.ci_high - result.ci_low) * 100 / 2 > margin:
            return "undecided"
    return "yes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", action="append", required=True,
                        help="NAME=OVERRIDES (comma list of --recipe overrides; empty: the scale's own recipe), "
                             "in ladder order")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--partitions", help="comma list: the partitions run, and the only ones summarised "
                                              "(default: all)")
    parser.add_argument("--seeds", default="0", help="comma list: the seeds run, and the only ones summarised")
    parser.add_argument("--out", default="results/convergence")
    parser.add_argument("--cache")
    parser.add_argument("--executor", default="ray")
    parser.add_argument("--tolerance", type=float, default=1.0, help="points of mean AUROC (default 1)")
    parser.add_argument("--swap-margin", type=float, default=2.0, help="points (default 2)")
    parser.add_argument("--report-only", action="store_true", help="only summarise what --out holds")
    parser.add_argument("--per-cell", action="store_true", help="also print each step's change in every cell")
    args = parser.parse_args()

    points = [item.partition("=")[::2] for item in args.point]
    labels = [spec.label for spec in parse_methods(args.methods)]
    seeds = [int(seed) for seed in args.seeds.split(",")]  # every point is summarised over these seeds only
    if not args.report_only:
        for _, overrides in points:
            run_point(args, overrides)
    store = ResultStore(args.out)
    results, records = store.frame(), list(store.records())  # read once for every point
    means, accuracy, costs, frames, places = {}, {}, {}, {}, {}
    for name, overrides in points:
        frame = for_recipe(results, parse_overrides([overrides] if overrides else []))
        frame = frame[(frame["protocol"] == "setting1") & (frame["scale"] == args.scale) & frame["method"].isin(labels)
                      & frame["seed"].isin(seeds)]
        if args.partitions:
            frame = frame[frame["partition"].isin(args.partitions.split(","))]
        if frame.empty:
            sys.exit(f"no {args.scale} results of point {name} in {args.out}: run it first (without --report-only)")
        frames[name] = frame
        means[name], accuracy[name], own = summarise(frame)
        costs[name] = (own + shared_seconds(records, set(frame["trial_id"]))) / 60
        places[name] = training_places(records, set(frame["trial_id"]))

    table = point_table(means, accuracy, costs)
    print("Mean AUROC (%) over partitions per ladder point\n")
    print(tabulate(table, headers=["method", *table.columns], tablefmt="github"))
    steps = list(itertools.pairwise(name for name, _ in points))
    methods = [method for method in table.index if method in frames[points[0][0]]["method"].values]
    # The change table's rows: each method's AUROC, and the classifier's accuracy (read from softmax's records).
    measured = [(method, method, "auroc") for method in methods]
    measured += [("(accuracy, classifier)", "softmax", "accuracy")] if "softmax" in methods else []
    changes = {(label, step): paired_change(frames, method, *step, metric)
               for label, method, metric in measured for step in steps}
    print("\nLadder steps (each step's means are over the (partition, seed) cells both its points ran)\n")
    rows, chosen = [], None
    for first, second in steps:
        *shared, cells = on_shared_cells(frames[first], frames[second])
        shift, mover, swaps = stable_step(*(mean_auroc(frame) for frame in shared), args.swap_margin)
        verdict = step_verdict(shift, swaps, [changes[method, (first, second)] for method in methods],
                               args.tolerance, args.swap_margin)
        chosen = chosen or (first if verdict == "yes" else None)
        rows.append([f"{first} -> {second}", len(cells), trained_alike(places[first], places[second], cells),
                     f"{shift:.1f} ({mover})", "; ".join(swaps) or "none", verdict])
    columns = ["step", "cells", "trained alike", "largest mean change", f"swaps (gap > {args.swap_margin:g})",
               "stable"]
    print(tabulate(rows, headers=columns, tablefmt="github"))
    print(f"\nreference: {chosen or 'none of these points: train longer, or add seeds where a step is undecided'}")
    print("\nChange of each method's AUROC per step, paired over the (partition, seed) cells both points ran "
          "(mean, 95% bootstrap CI; then how many cells rose, and the smallest and largest change): a change whose "
          f"interval holds 0 may be seed noise; one whose interval is wider than +-{args.swap_margin:g} leaves its "
          "step undecided. The classifier's accuracy is read from softmax's records and is not part of the verdict\n")
    rows = [[label, *(text for step in steps for text in (format_change(changes[label, step]),
                                                          cell_spread(changes[label, step])))]
            for label, method, metric in measured]
    headers = [text for a, b in steps for text in (f"{a} -> {b}", "cells")]
    print(tabulate(rows, headers=["method", *headers], tablefmt="github", disable_numparse=True))  # keep "+0.7"
    if args.per_cell:
        for step in steps:
            table = pd.DataFrame({label: cell_changes(frames, method, *step, metric)
                                  for label, method, metric in measured}).T
            table.columns = [f"{partition} s{seed}" for partition, seed in table.columns]
            print(f"\n{step[0]} -> {step[1]}: change in each (partition, seed) cell, points\n")
            print(tabulate(table.map(lambda value: f"{value:+.1f}" if pd.notna(value) else ""),
                           headers=["method", *table.columns], tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
