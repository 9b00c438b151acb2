"""Re-run noise: how far a trial's AUROC moves when the very same trial runs again elsewhere (another host,
another thread count), against how far it moves between two seeds.

    python benchmarks/rerun_noise.py --store benchmarks/study --rerun benchmarks/study/host_v1300

A trial's id fixes its data, seed, recipe and code, so the records of one id in both stores differ only by
where and how they ran. For every id both stores hold this prints the re-run's change (re-run minus
store, points of AUROC) per method: how many, mean, SD, range and mean size, and the range of the change
of accuracy; and, for the same methods, partitions and recipes in `--store`, the spread between seeds:
the SD of the difference between two seeds' AUROC in one partition (each pair counted both ways, so its
mean is 0). A re-run whose SD is near the two-seed one is as good as a new seed: a ladder step paired
across hosts would then pair nothing but the partition.
"""
from __future__ import annotations

import argparse
import itertools
import sys

import pandas as pd
from tabulate import tabulate

from bench.store import ResultStore

# What makes two records comparable apart from the seed: one method at one recipe on one partition.
GROUP = ["protocol", "dataset", "scale", "overrides", "method", "partition"]


def rerun_differences(store: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    """One row per trial id both frames hold: its group, seed, and the re-run's change of AUROC and
    accuracy, in points."""
    pairs = rerun.merge(store[["trial_id", "auroc", "accuracy"]], on="trial_id", suffixes=("", "_store"))
    return pairs[GROUP + ["seed"]].assign(auroc=(pairs["auroc"] - pairs["auroc_store"]) * 100,
                                          accuracy=(pairs["accuracy"] - pairs["accuracy_store"]) * 100)


def seed_differences(store: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """For each of `groups` (rows of GROUP), every difference between two seeds' AUROC in `store`, in points,
    both ways round."""
    rows = store.merge(groups[GROUP].drop_duplicates(), on=GROUP)
    differences = []
    for key, group in rows.groupby(GROUP):
        for first, second in itertools.permutations(group["auroc"].to_numpy() * 100, 2):
            differences.append(dict(zip(GROUP, key)) | {"auroc": first - second})
    return pd.DataFrame(differences, columns=GROUP + ["auroc"])


def summary(reruns: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """Per method, then over all: the re-runs' count, mean, SD, range and mean size, the range of the change
    of accuracy, and the two-seed count (unordered pairs) and SD."""
    def describe(rerun: pd.Series, accuracy: pd.Series, seed: pd.Series) -> dict:
        return {"re-runs": len(rerun), "mean": rerun.mean(), "SD": rerun.std(), "min": rerun.min(),
                "max": rerun.max(), "mean size": rerun.abs().mean(), "accuracy min": accuracy.min(),
                "accuracy max": accuracy.max(), "seed pairs": len(seed) // 2,
                "two-seed SD": (seed ** 2).mean() ** 0.5 if len(seed) else float("nan")}

    table = {method: describe(group["auroc"], group["accuracy"], seeds.loc[seeds["method"] == method, "auroc"])
             for method, group in reruns.groupby("method")}
    table["(all)"] = describe(reruns["auroc"], reruns["accuracy"], seeds["auroc"])
    return pd.DataFrame(table).T.astype({"re-runs": int, "seed pairs": int})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the folder of the first runs (holds trials/)")
    parser.add_argument("--rerun", required=True, help="the folder of the re-runs (holds trials/)")
    parser.add_argument("--methods", help="comma list (default: every method both stores hold)")
    args = parser.parse_args()

    store, rerun = ResultStore(args.store).frame(), ResultStore(args.rerun).frame()
    for folder, frame in ((args.store, store), (args.rerun, rerun)):
        if frame.empty:
            sys.exit(f"no trial records in {folder}/trials: give the --out folder of a bench run")
    if args.methods:
        rerun = rerun[rerun["method"].isin(args.methods.split(","))]
    reruns = rerun_differences(store, rerun)
    if reruns.empty:
        sys.exit(f"no trial of {args.rerun} is in {args.store}: re-run some of its trials (same recipe, seed "
                 "and partition) into a separate --out")
    seeds = seed_differences(store, reruns)
    table = summary(reruns, seeds)
    print(f"Re-run minus first run, points of AUROC ({len(reruns)} trials in "
          f"{reruns[['partition', 'seed']].drop_duplicates().shape[0]} cells); two seeds' difference at the same "
          "methods, partitions and recipes\n")
    print(tabulate(table, headers=["method", *table.columns], tablefmt="github",
                   floatfmt=("", "g", "+.2f", ".2f", "+.2f", "+.2f", ".2f", "+.2f", "+.2f", "g", ".2f")))
    overall = table.loc["(all)"]
    print(f"\nA re-run moves a trial's AUROC by SD {overall['SD']:.2f}; two seeds differ by SD "
          f"{overall['two-seed SD']:.2f}: a re-run keeps {(overall['SD'] / overall['two-seed SD']) ** 2:.0%} of the "
          "two-seed variance")


if __name__ == "__main__":
    main()
