"""Paired comparisons on hand-made results whose per-cell differences are known."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.compare import compare, format_comparison, paired_differences
from bench.errors import BenchError
from bench.store import ResultStore

# alpha - beta on AUROC per (partition, seed): 4 wins, 1 loss, 1 tie; mean 0.45 / 6 = 0.075
DIFFERENCES = {("0-5", 0): 0.05, ("0-5", 1): 0.10, ("0-5", 2): 0.15,
               ("1-6", 0): 0.20, ("1-6", 1): -0.05, ("1-6", 2): 0.0}


def _row(partition, seed, method, auroc):
    return {"protocol": "p", "dataset": "d", "partition": partition, "seed": seed, "method": method,
            "scale": "smoke", "auroc": auroc, "fpr95": 1 - auroc, "accuracy": 0.9, "total_s": 60.0}


def _frame(differences=DIFFERENCES):
    rows = []
    for (partition, seed), difference in differences.items():
        rows += [_row(partition, seed, "alpha", 0.5 + difference), _row(partition, seed, "beta", 0.5)]
    # a cell each that only one method has: neither can be paired
    rows += [_row("2-7", 0, "alpha", 0.9), _row("3-8", 0, "beta", 0.1)]
    return pd.DataFrame(rows)


def test_pairs_only_the_cells_both_methods_have():
    pairs = paired_differences(_frame(), "alpha", "beta")
    assert len(pairs) == 6 and pairs.attrs["dropped"] == 2
    assert list(pairs.columns) == ["protocol", "dataset", "partition", "seed", "value_a", "value_b", "difference"]
    by_cell = dict(zip(zip(pairs["partition"], pairs["seed"]), pairs["difference"]))
    assert by_cell == pytest.approx(DIFFERENCES)


def test_mean_wins_and_a_bootstrap_interval_around_the_mean():
    result = compare(_frame(), "alpha", "beta")
    assert (result.cells, result.dropped) == (6, 2)
    assert result.mean_difference == pytest.approx(0.075)
    assert (result.min_difference, result.max_difference) == pytest.approx((-0.05, 0.20))
    assert (result.wins, result.losses, result.ties) == (4, 1, 1)
    assert result.ci_method == "BCa" and result.n_resamples == 10_000
    # a mean of resampled cells lies between the smallest and the largest difference
    assert -0.05 - 1e-12 <= result.ci_low < result.mean_difference < result.ci_high <= 0.20 + 1e-12
    assert result.cells_text == "2 partitions x 3 seeds"


def test_the_interval_is_seeded():
    assert compare(_frame(), "alpha", "beta", seed=3) == compare(_frame(), "alpha", "beta", seed=3)


def test_identical_differences_give_the_point_as_interval():
    # (0.2 + 0.1) - 0.2 and (0.5 + 0.1) - 0.5 differ in the last bits only: one difference, so BCa is degenerate
    rows = [_row(partition, seed, method, value + (0.1 if method == "alpha" else 0.0))
            for partition, value in (("0-5", 0.2), ("1-6", 0.5)) for seed in (0, 1) for method in ("alpha", "beta")]
    pairs = paired_differences(pd.DataFrame(rows), "alpha", "beta")
    assert pairs["difference"].nunique() == 2  # float rounding, not a real spread
    result = compare(pd.DataFrame(rows), "alpha", "beta")
    assert result.ci_method == "percentile"
    assert result.ci_low == pytest.approx(0.1, abs=1e-12) and result.ci_high == pytest.approx(0.1, abs=1e-12)
    assert result.ci_high - result.ci_low < 1e-12
    assert (result.wins, result.losses, result.ties) == (4, 0, 0)


def test_a_win_on_fpr95_is_a_lower_fpr95():
    result = compare(_frame(), "alpha", "beta", metric="fpr95")
    assert result.mean_difference == pytest.approx(-0.075)  # alpha's fpr95 is lower: better
    assert (result.wins, result.losses, result.ties) == (4, 1, 1)
    assert -0.20 - 1e-12 <= result.ci_low < result.mean_difference < result.ci_high <= 0.05 + 1e-12
    text = format_comparison(result)
    assert "FPR95 (lower is better)" in text and "-7.5 points" in text and "alpha wins 4, loses 1, ties 1" in text


def test_format_in_percent_points():
    text = format_comparison(compare(_frame(), "alpha", "beta"))
    head, wins, dropped = text.splitlines()
    assert head.startswith("alpha - beta, AUROC over 6 cells (2 partitions x 3 seeds): +7.5 points, "
                           "95% bootstrap CI [")
    assert head.endswith("] (BCa, 10000 resamples)") and "lower is better" not in head
    assert wins == "alpha wins 4, loses 1, ties 1"
    assert dropped == "left out 2 cells that only one of the two methods has"


def test_a_single_cell_gives_the_difference_without_an_interval():
    result = compare(_frame({("0-5", 0): 0.25}), "alpha", "beta")
    assert result.cells == 1 and result.mean_difference == pytest.approx(0.25)
    assert result.ci_low is None and result.ci_high is None and result.ci_method is None
    assert "+25.0 points, no interval from a single cell" in format_comparison(result)


def _write_store(tmp_path):
    store = ResultStore(tmp_path)
    timing = {"summary": {"fit_s": 1.0, "score_s": 1.0, "shared_s": 0.0, "total_s": 2.0}}
    for (partition, seed), difference in DIFFERENCES.items():
        for method, auroc in (("alpha", 0.5 + difference), ("beta", 0.5)):
            store.write({"trial_id": f"{method}-{partition}-{seed}", "protocol": "p", "dataset": "d",
                         "partition": partition, "seed": seed, "method": method, "scale": "smoke",
                         "metrics": {"auroc": auroc}, "timing": timing, "ood_sets": {},
                         "provenance": {"finished": "2026-01-01T00:00:00"}})
    return store


def test_reads_a_result_store(tmp_path):
    result = compare(_write_store(tmp_path).frame(), "alpha", "beta")
    assert (result.cells, result.dropped, result.wins) == (6, 0, 4)
    assert result.mean_difference == pytest.approx(0.075)


def test_unknown_method_names_the_methods_present():
    with pytest.raises(BenchError, match="'gamma'.*alpha, beta"):
        compare(_frame(), "alpha", "gamma")


def test_unknown_metric_lists_the_metrics():
    with pytest.raises(BenchError, match="'auprc'.*auroc, fpr95, accuracy, total_s"):
        compare(_frame(), "alpha", "beta", metric="auprc")


def test_no_shared_cells_says_what_to_run():
    frame = _frame()
    apart = frame[~((frame["method"] == "beta") & frame["partition"].isin(["0-5", "1-6"]))]
    with pytest.raises(BenchError, match=r"alpha and beta share no .*--methods alpha,beta") as err:
        compare(apart, "alpha", "beta")
    assert "\n" not in str(err.value)


def test_two_results_for_one_cell_are_refused():
    frame = _frame()
    twice = pd.concat([frame, frame[frame["method"] == "beta"].assign(scale="demo")])
    with pytest.raises(BenchError, match="beta has several results.*--scale"):
        compare(twice, "alpha", "beta")


def test_the_cli_prints_the_comparison_and_refuses_a_bad_method_in_one_line(tmp_path, capsys):
    from bench.cli import main

    _write_store(tmp_path)
    assert main(["compare", "alpha", "beta", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "alpha - beta, AUROC over 6 cells (2 partitions x 3 seeds): +7.5 points" in out
    assert "alpha wins 4, loses 1, ties 1" in out
    assert main(["compare", "alpha", "gamma", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gamma" in err
