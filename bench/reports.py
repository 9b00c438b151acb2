"""Tables from the result store only: the papers' Tables 1-3, one row per OOD set, and a leaderboard.

Spread is the sample standard deviation (ddof=1), by default across partitions of the
per-partition mean over seeds (with one seed, the papers' "± over 5 partitions"), or across
every (partition, seed) cell (`spread="cells"`); each table says which and how many.
"""
from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from bench.errors import BenchError

PERCENT_METRICS = ("auroc", "fpr95", "fpr95_oodpos", "aupr_in", "aupr_out", "accuracy")
OOD_METRICS = PERCENT_METRICS[:-1]  # accuracy is per ID test set, not per OOD set
SPREADS = {
    "partitions": "± is the sample std (ddof=1) over partitions of the per-partition mean over seeds",
    "cells": "± is the sample std (ddof=1) over all (partition, seed) cells",
}


def _check_choices(metric: str, metrics: tuple[str, ...], spread: str, what: str = "metric") -> None:
    """Name a bad --metric or --spread before looking at the results (an empty store is another problem)."""
    if metric not in metrics:
        raise BenchError(f"unknown {what} {metric!r}; choose one of {', '.join(metrics)}")
    if spread not in SPREADS:
        raise BenchError(f"unknown spread {spread!r}; choose one of {', '.join(SPREADS)}")


def _require(frame: pd.DataFrame, where: str, metric: str | None = None) -> pd.DataFrame:
    """The frame, unless it is empty, lacks `metric`, or mixes two data definitions of one partition.

    Two definitions of one partition (e.g. the two CIFAR+50s, or a run with a skipped OOD set
    beside a full one) cannot share a mean: the table is refused.
    """
    if frame.empty:
        raise BenchError(f"no results found in {where}; run `bench run ...` first, or pass --out to the folder it wrote")
    if metric is not None and metric not in frame:
        raise BenchError(f"the results in {where} have no {metric} (an older version wrote them); "
                         "choose another metric or re-run them with --force")
    if "data_key" in frame:
        definitions = frame.dropna(subset=["data_key"]).groupby(["protocol", "dataset", "partition"])["data_key"].nunique()
        mixed = [f"{p}/{d}/{part}" for (p, d, part), count in definitions.items() if count > 1]
        if mixed:
            raise BenchError(f"results in {where} mix different data definitions of {', '.join(mixed)} (another class "
                             "split or other OOD sets); keep each definition in its own --out folder")
    if "aux" in frame:
        sets = frame.dropna(subset=["aux"]).groupby(["protocol", "dataset", "method"])["aux"].unique()
        mixed = [f"{method} ({', '.join(values)})" for (_, _, method), values in sets.items() if len(values) > 1]
        if mixed:
            raise BenchError(f"results in {where} hold {', '.join(mixed)} trained on different auxiliary sets; "
                             "choose one with --aux")
    return frame


def for_recipe(frame: pd.DataFrame, overrides=()) -> pd.DataFrame:
    """The rows a recipe produced: each trial's own overrides are those of `overrides` that reach its tables.

    Without overrides: the scale's own recipe. A trial that no override reaches (or changes) is shared by both.
    """
    from bench.recipes import overrides_text

    if frame.empty or "overrides" not in frame:
        return frame
    wanted = frame.apply(lambda row: row["overrides"] == overrides_text(
        o for o in overrides if o.table in row["recipe_tables"] and o.changes(row["family"], row["scale"])), axis=1)
    return frame[wanted.astype(bool)]


def _units(frame: pd.DataFrame, value: str, spread: str, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """The values the ± is taken over: per-partition means over seeds, or every (partition, seed) cell."""
    if spread not in SPREADS:
        raise BenchError(f"unknown spread {spread!r}; choose one of {', '.join(SPREADS)}")
    keys = ["protocol", "dataset", *by, "method", "partition"] + (["seed"] if spread == "cells" else [])
    return frame.groupby(keys, as_index=False)[value].mean()


def _note(frame: pd.DataFrame, spread: str, methods) -> str:
    """Which spread, over how many partitions and seeds: those of the methods shown, not of the whole frame."""
    frame = frame[frame["method"].isin(list(methods))]
    if frame.empty:
        return f"{SPREADS[spread]} (no cells)"
    partitions = frame.groupby(["protocol", "dataset"])["partition"].nunique()
    seeds = frame.groupby(["protocol", "dataset", "method", "partition"])["seed"].nunique()
    count = f"{partitions.min()}" if partitions.min() == partitions.max() else f"{partitions.min()}-{partitions.max()}"
    seed = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    return f"{SPREADS[spread]} ({count} partitions x {seed} seeds)"


def _cell(values: pd.Series, scale: float, digits: int) -> str:
    mean = values.mean() * scale
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {values.std(ddof=1) * scale:.{digits}f}"


def _method_order(frame: pd.DataFrame, methods: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(frame["method"]))
    return [m for m in methods if m in present] if methods else sorted(present)


def table1(frame: pd.DataFrame, metric: str = "auroc", methods: list[str] | None = None, where: str = "",
           spread: str = "partitions") -> str:
    """One row per dataset, one column per method: mean ± std over partitions, in percent."""
    _check_choices(metric, PERCENT_METRICS, spread)
    frame = _require(frame, where, metric)
    parts = _units(frame, metric, spread)
    order = _method_order(parts, methods)
    rows = []
    for (protocol, dataset), group in parts.groupby(["protocol", "dataset"], sort=False):
        counts = group.groupby("method")["partition"].nunique()
        row = [f"{dataset} ({protocol})", int(counts.max())]
        for method in order:
            values = group.loc[group["method"] == method, metric]
            row.append(_cell(values, 100, 1) if len(values) else "")
        rows.append(row)
    means = parts.groupby(["protocol", "dataset", "method"])[metric].mean().groupby("method").mean()
    rows.append(["Average", ""] + [f"{means[m] * 100:.1f}" if m in means else "" for m in order])
    title = f"Table 1: {metric.upper()} (%) — {_note(frame, spread, order)}."
    if metric.startswith("fpr95"):
        title += " fpr95 accepts 95% of ID (ID-positive); fpr95_oodpos catches 95% of OOD."
    return title + "\n\n" + tabulate(rows, headers=["dataset", "partitions", *order], tablefmt="github", disable_numparse=True)


def table_ood(frame: pd.DataFrame, metric: str = "auroc", methods: list[str] | None = None, where: str = "",
              spread: str = "partitions") -> str:
    """One row per (dataset, OOD set), one column per method, as far-OOD papers report; needs a per-OOD-set frame."""
    _check_choices(metric, OOD_METRICS, spread, "OOD metric")
    frame = _require(frame, where, metric)
    parts = _units(frame, metric, spread, by=("ood_set",))
    order = _method_order(parts, methods)
    rows = []
    for (protocol, dataset, ood_set), group in parts.groupby(["protocol", "dataset", "ood_set"], sort=False):
        row = [f"{dataset} ({protocol})", ood_set]
        for method in order:
            values = group.loc[group["method"] == method, metric]
            row.append(_cell(values, 100, 1) if len(values) else "")
        rows.append(row)
    title = (f"{metric.upper()} (%) per OOD set — {_note(frame, spread, order)}; an empty cell: that set was not run "
             "(or was skipped).")
    return title + "\n\n" + tabulate(rows, headers=["dataset", "OOD set", *order], tablefmt="github", disable_numparse=True)


MOODCAT_COLUMNS = (("fpr95", "FPR@95↓"), ("auroc", "AUROC↑"), ("aupr_in", "AUPR-In↑"), ("aupr_out", "AUPR-Out↑"))


def table_moodcat(frame: pd.DataFrame, methods: list[str] | None = None, where: str = "") -> str:
    """MOODCAT's layout (its Tables 1-2, 7-8): per ID dataset, one row per OOD set with FPR@95, AUROC, AUPR-In and
    AUPR-Out for each method (a column group each), then their mean ± std over the OOD sets and the ID accuracy.

    Each value is first averaged over partitions and seeds; needs a per-OOD-set frame."""
    frame = _require(frame, where)
    order = _method_order(frame, methods)
    metrics = [metric for metric, _ in MOODCAT_COLUMNS]
    per_set = frame.groupby(["protocol", "dataset", "ood_set", "method"], sort=False)[metrics].mean()
    accuracy = frame.groupby(["protocol", "dataset", "method"])["accuracy"].mean()
    headers = ["dataset", "OOD set"] + [f"{method} {label}" for method in order for _, label in MOODCAT_COLUMNS]
    blocks = []
    for (protocol, dataset), group in frame.groupby(["protocol", "dataset"], sort=False):
        rows = []
        sets = list(dict.fromkeys(group["ood_set"]))
        for ood_set in sets:
            row = [f"{dataset} ({protocol})", ood_set]
            for method in order:
                key = (protocol, dataset, ood_set, method)
                row += [f"{per_set.loc[key, m] * 100:.2f}" if key in per_set.index else "" for m in metrics]
            rows.append(row)
        mean_row, accuracy_row = [f"{dataset} ({protocol})", "mean ± std"], [f"{dataset} ({protocol})", "ID accuracy"]
        for method in order:
            values = [per_set.loc[(protocol, dataset, s, method)] for s in sets if (protocol, dataset, s, method)
                      in per_set.index]
            for metric in metrics:
                series = pd.Series([value[metric] for value in values], dtype=float)
                mean_row.append(_cell(series, 100, 2) if len(series) else "")
            key = (protocol, dataset, method)
            accuracy_row += [f"{accuracy[key] * 100:.2f}" if key in accuracy.index else ""] + [""] * (len(metrics) - 1)
        rows += [mean_row, accuracy_row]
        blocks.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    counts = _note(frame, "cells", order).split("(")[-1].rstrip(")")
    title = (f"MOODCAT's layout, in %: each value the mean over {counts}; mean ± std is over the OOD sets (sample "
             "std, ddof=1).")
    return title + "\n\n" + "\n\n".join(blocks)


def _fine_tuned_pairs(methods) -> dict[str, list[str]]:
    """{fine-tuning method: [networks it was run on]} from labels written `<network>+<method>`."""
    pairs: dict[str, list[str]] = {}
    for label in methods:
        base, plus, tuner = label.partition("+")
        if plus and "[" not in base:
            pairs.setdefault(tuner, []).append(base)
    return pairs


def table2(frame: pd.DataFrame, metric: str = "auroc", bases: list[str] | None = None, where: str = "",
           spread: str = "partitions") -> str:
    """CMG's Table 2 layout: per base network, its own method ("original") beside `<base>+<tuner>`.

    Pairs are read from the method labels, so any method that fine-tunes a network gets a
    table: one row per dataset (mean ± std over partitions) and an average row.
    """
    _check_choices(metric, PERCENT_METRICS, spread)
    frame = _require(frame, where, metric)
    parts = _units(frame, metric, spread)
    pairs = _fine_tuned_pairs(dict.fromkeys(parts["method"]))
    if not pairs:
        raise BenchError(f"no fine-tuned results in {where}; run e.g. `bench run --methods csi,csi+cmg_e ...`")
    blocks = []
    for tuner, found in pairs.items():
        order = [b for b in bases if b in found] if bases else sorted(found)
        columns = [(base, label) for base in order for label in (base, f"{base}+{tuner}")]
        rows = []
        for (protocol, dataset), group in parts.groupby(["protocol", "dataset"], sort=False):
            row = [f"{dataset} ({protocol})"]
            for _, label in columns:
                values = group.loc[group["method"] == label, metric]
                row.append(_cell(values, 100, 1) if len(values) else "")
            rows.append(row)
        means = parts.groupby(["protocol", "dataset", "method"])[metric].mean().groupby("method").mean()
        rows.append(["Average"] + [f"{means[label] * 100:.1f}" if label in means else "" for _, label in columns])
        headers = ["dataset"] + [f"{base} {'original' if label == base else '+' + tuner}" for base, label in columns]
        note = _note(frame, spread, [label for _, label in columns])
        blocks.append(f"Table 2: {metric.upper()} (%) of each network's own method (original) and after "
                      f"{tuner}'s fine-tuning (+{tuner}) — {note}; an empty cell was not run.\n\n"
                      + tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    return "\n\n".join(blocks)


def table3(frame: pd.DataFrame, methods: list[str] | None = None, where: str = "") -> str:
    """Minutes each method spends on a whole dataset: its fit and scoring plus every shared model it needs."""
    frame = _require(frame, where)
    order = _method_order(frame, methods)
    per_seed = frame.groupby(["protocol", "dataset", "method", "seed"], as_index=False)["total_s"].sum()
    minutes = per_seed.groupby(["protocol", "dataset", "method"])["total_s"].mean() / 60
    rows = []
    for (protocol, dataset), group in minutes.groupby(level=[0, 1], sort=False):
        per_method = group.droplevel([0, 1])
        rows.append([f"{dataset} ({protocol})"] + [f"{per_method[m]:.2f}" if m in per_method else "" for m in order])
    title = ("Table 3: execution time (min) per dataset, summed over partitions and averaged over seeds; "
             "each method is charged for training every shared model it uses (its own network, the classifier, "
             "a CVAE...), "
             "even where the harness trained it once for several methods.")
    return title + "\n\n" + tabulate(rows, headers=["dataset", *order], tablefmt="github", disable_numparse=True)


def cost_table(frame: pd.DataFrame, methods: list[str] | None = None, where: str = "") -> str:
    """Seconds per trial that a method spends itself (fit, scoring) against the shared models it uses."""
    frame = _require(frame, where)
    order = _method_order(frame, methods)
    columns = ["fit_s", "score_s", "shared_s"]
    means = frame.groupby(["protocol", "dataset", "method"])[columns].mean()
    rows = []
    for (protocol, dataset, method), row in means.iterrows():
        if method in order:
            own = row["fit_s"] + row["score_s"]
            share = f"{100 * own / row['shared_s']:.1f}" if row["shared_s"] > 0 else ""
            rows.append([f"{dataset} ({protocol})", method, f"{row['fit_s']:.2f}", f"{row['score_s']:.2f}",
                         f"{own:.2f}", f"{row['shared_s']:.2f}", share])
    rows.sort(key=lambda r: (r[0], order.index(r[1])))
    title = ("Cost per trial (s, mean over partitions and seeds): what a method adds (fit + scoring the test sets) "
             "on top of the shared models it uses (training time, paid once and shared).")
    headers = ["dataset", "method", "fit", "score", "own", "shared models", "own / shared (%)"]
    return title + "\n\n" + tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def leaderboard(frame: pd.DataFrame, where: str = "") -> str:
    """Methods ranked by mean AUROC over every (protocol, dataset), with the other metrics beside it."""
    frame = _require(frame, where)
    metrics = [m for m in PERCENT_METRICS if m in frame]
    per_dataset = frame.groupby(["protocol", "dataset", "method"])[metrics + ["total_s"]].mean()
    board = per_dataset.groupby("method").mean().sort_values("auroc", ascending=False)
    datasets = per_dataset.reset_index().groupby("method")["dataset"].nunique()
    rows = [
        [rank, method, *[f"{board.loc[method, m] * 100:.2f}" for m in metrics],
         f"{board.loc[method, 'total_s'] / 60:.2f}", int(datasets[method])]
        for rank, method in enumerate(board.index, start=1)
    ]
    headers = ["rank", "method", *[f"{m} (%)" for m in metrics], "min/partition", "datasets"]
    intro = ("Leaderboard: mean over (protocol, dataset) of the per-dataset mean over partitions and seeds. "
             "fpr95 is ID-positive (95% of ID accepted; lower is better); fpr95_oodpos is OpenOOD's OOD-positive "
             "variant. Time includes every shared model a method needs.")
    return intro + "\n\n" + tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
