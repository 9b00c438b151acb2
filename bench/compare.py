"""Paired comparison of two methods: their difference on each (protocol, dataset, partition, seed) cell.

Both methods see the same split and seed in a cell, so the per-cell difference removes the
partition-to-partition spread that dominates Table 1's ± and would hide a consistent gain.
The interval comes from a bootstrap over cells (`scipy.stats.bootstrap`, seeded), so it says
how much the mean difference depends on which cells were run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.errors import BenchError
from bench.reports import PERCENT_METRICS

CELL = ["protocol", "dataset", "partition", "seed"]
TIME_METRICS = ("fit_s", "score_s", "shared_s", "total_s")
LOWER_IS_BETTER = ("fpr95", "fpr95_oodpos", *TIME_METRICS)
# Differences this close are one difference seen through float rounding (0.9 - 0.8 vs 0.8 - 0.7):
# the bootstrap distribution is then a point and BCa has nothing to correct.
EQUAL_DIFFERENCES = 1e-12


@dataclass(frozen=True)
class Comparison:
    """`a` - `b` on `metric`, paired by cell; wins count cells where `a` is better (lower for LOWER_IS_BETTER)."""

    a: str
    b: str
    metric: str
    cells: int
    mean_difference: float
    min_difference: float  # the cells' smallest and largest a - b: whether the mean is every cell's or a few cells'
    max_difference: float
    ci_low: float | None  # None with a single cell: there is nothing to resample
    ci_high: float | None
    confidence: float
    ci_method: str | None  # "BCa", or "percentile" where BCa is degenerate
    n_resamples: int
    wins: int
    losses: int
    ties: int
    dropped: int  # cells only one of the two methods has
    cells_text: str  # e.g. "5 partitions x 3 seeds"

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER


def _metrics(frame: pd.DataFrame) -> list[str]:
    return [m for m in (*PERCENT_METRICS, *TIME_METRICS) if m in frame]


def paired_differences(frame: pd.DataFrame, a: str, b: str, metric: str = "auroc") -> pd.DataFrame:
    """One row per cell both methods have: value_a, value_b and difference = a - b.

    Cells only one method has (or where its metric is missing) cannot be paired and are left
    out; their count is in `result.attrs["dropped"]`.
    """
    if frame.empty:
        raise BenchError("no results to compare; run `bench run ...` first, or pass --out to the folder it wrote")
    if metric not in _metrics(frame):
        raise BenchError(f"unknown metric {metric!r}; choose one of {', '.join(_metrics(frame))}")
    present = sorted(dict.fromkeys(frame["method"]))
    for method in (a, b):
        if method not in present:
            raise BenchError(f"no results for method {method!r}; the results hold {', '.join(present)}")
    sides = []
    for method in (a, b):
        rows = frame[(frame["method"] == method) & frame[metric].notna()]
        repeated = rows[rows.duplicated(CELL, keep=False)]
        if not repeated.empty:
            protocol, dataset, partition, seed = repeated.iloc[0][CELL]
            raise BenchError(f"{method} has several results for {protocol}/{dataset}/{partition} seed {seed} "
                             "(more than one scale or recipe); choose one with --scale, --protocol and --recipe")
        keep = CELL + [metric] + (["data_key"] if "data_key" in rows else [])
        sides.append(rows[keep].rename(columns={metric: "value", "data_key": "data"}))
    pairs = sides[0].merge(sides[1], on=CELL, how="outer", suffixes=("_a", "_b"), indicator=True)
    shared = pairs[pairs["_merge"] == "both"]
    if shared.empty:
        raise BenchError(f"{a} and {b} share no (protocol, dataset, partition, seed) cell; run both on the same "
                         f"cells, e.g. `bench run --methods {a},{b} --protocol ... --seeds ...`")
    if "data_a" in shared:
        mixed = shared[shared["data_a"].notna() & shared["data_b"].notna() & (shared["data_a"] != shared["data_b"])]
        if not mixed.empty:
            protocol, dataset, partition = mixed.iloc[0][CELL[:3]]
            raise BenchError(f"{a} and {b} were run on different data definitions of {protocol}/{dataset}/{partition} "
                             "(another class split or other OOD sets); keep each definition in its own --out folder")
    result = shared[CELL + ["value_a", "value_b"]].assign(difference=shared["value_a"] - shared["value_b"])
    result = result.sort_values(CELL).reset_index(drop=True)
    result.attrs["dropped"] = len(pairs) - len(shared)
    return result


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _describe_cells(pairs: pd.DataFrame) -> str:
    """What the cells are, e.g. "5 partitions x 3 seeds" or "10 partitions x 1-3 seeds over 2 datasets"."""
    seeds = pairs.groupby(["protocol", "dataset", "partition"])["seed"].nunique()
    fewest, most = int(seeds.min()), int(seeds.max())
    per_partition = _plural(most, "seed") if fewest == most else f"{fewest}-{most} seeds"
    text = f"{_plural(len(seeds), 'partition')} x {per_partition}"
    datasets = pairs[["protocol", "dataset"]].drop_duplicates()
    return text + (f" over {len(datasets)} datasets" if len(datasets) > 1 else "")


def _interval(differences: np.ndarray, confidence: float, n_resamples: int, seed: int):
    """(low, high, method) of the mean difference, resampling cells (each cell's difference is one observation).

    BCa corrects the skew that a few cells give, but is degenerate without a spread: with (near)
    equal differences the percentile interval is used, which is then the point itself.
    """
    method = "percentile" if np.ptp(differences) <= EQUAL_DIFFERENCES else "BCa"
    result = stats.bootstrap((differences,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                             method=method, random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high), method


def compare(frame: pd.DataFrame, a: str, b: str, metric: str = "auroc", confidence: float = 0.95,
            n_resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Mean of a - b over the shared cells with a seeded bootstrap interval, and a's wins, losses and ties."""
    pairs = paired_differences(frame, a, b, metric)
    differences = pairs["difference"].to_numpy(dtype=float)
    low = high = ci_method = None
    if len(differences) > 1:
        low, high, ci_method = _interval(differences, confidence, n_resamples, seed)
    better, worse = (pairs["value_a"] < pairs["value_b"]), (pairs["value_a"] > pairs["value_b"])
    if metric not in LOWER_IS_BETTER:
        better, worse = worse, better
    return Comparison(a=a, b=b, metric=metric, cells=len(pairs), mean_difference=float(differences.mean()),
                      min_difference=float(differences.min()), max_difference=float(differences.max()),
                      ci_low=low, ci_high=high, confidence=confidence, ci_method=ci_method,
                      n_resamples=n_resamples, wins=int(better.sum()), losses=int(worse.sum()),
                      ties=int((pairs["value_a"] == pairs["value_b"]).sum()), dropped=pairs.attrs["dropped"],
                      cells_text=_describe_cells(pairs))


def format_comparison(result: Comparison) -> str:
    """A few lines for the terminal: percent metrics in percent points with one decimal, as in the tables.

    For lower-is-better metrics (fpr95, seconds) the header says so, as a negative difference is then a gain.
    """
    percent = result.metric in PERCENT_METRICS
    scale, digits, unit = (100, 1, " points") if percent else (1, 2, " s")

    def show(value: float) -> str:
        return f"{value * scale:+.{digits}f}"

    name = result.metric.upper() if percent else result.metric
    if result.lower_is_better:
        name += " (lower is better)"
    head = (f"{result.a} - {result.b}, {name} over {_plural(result.cells, 'cell')} ({result.cells_text}): "
            f"{show(result.mean_difference)}{unit}")
    if result.ci_low is None:
        head += ", no interval from a single cell (run more seeds or partitions for one)"
    else:
        head += (f", {result.confidence * 100:g}% bootstrap CI [{show(result.ci_low)}, {show(result.ci_high)}] "
                 f"({result.ci_method}, {result.n_resamples} resamples)")
    wins = f"{result.a} wins {result.wins}, loses {result.losses}, ties {result.ties}"
    if result.lower_is_better:
        wins += f" (a win is a lower {result.metric} than {result.b} in the same cell)"
    lines = [head, wins]
    if result.dropped:
        lines.append(f"left out {_plural(result.dropped, 'cell')} that only one of the two methods has")
    return "\n".join(lines)
