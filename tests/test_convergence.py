"""The convergence study's criterion (benchmarks/convergence.py), on hand-made ladder points."""
from types import SimpleNamespace

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def convergence(benchmark_script):
    return benchmark_script("convergence")


def test_a_step_is_stable_only_without_large_moves_or_swaps(convergence):
    before = pd.Series({"a": 70.0, "b": 65.0, "c": 64.0})
    # c passes b, but they were 1 point apart and are 1 point apart: not a swap beyond the 2-point margin.
    shift, mover, swaps = convergence.stable_step(before, pd.Series({"a": 70.5, "b": 64.5, "c": 65.5}), 2.0)
    assert shift == pytest.approx(1.5) and mover == "c" and swaps == []
    # b passes a: 5 points behind, then 1 ahead -> a swap of methods more than 2 points apart.
    shift, mover, swaps = convergence.stable_step(before, pd.Series({"a": 69.0, "b": 70.0, "c": 64.0}), 2.0)
    assert shift == pytest.approx(5.0) and mover == "b" and swaps == ["a/b (+5.0 -> -1.0)"]


def test_the_change_of_a_method_is_paired_by_cell(convergence):
    def point(values):
        return pd.DataFrame([{"protocol": "setting1", "dataset": "fashion_mnist", "partition": partition, "seed": seed,
                              "method": "energy", "auroc": value}
                             for (partition, seed), value in values.items()])

    cells = [("0-5", 0), ("0-5", 1), ("1-6", 0), ("1-6", 1)]
    first = point(dict(zip(cells, [0.60, 0.70, 0.80, 0.90])))
    second = point(dict(zip(cells, [0.62, 0.71, 0.83, 0.90])))  # +2, +1, +3, 0 points: mean +1.5
    change = convergence.paired_change({"e8": first, "e16": second}, "energy", "e8", "e16")
    text = convergence.format_change(change)
    mean, interval = text.split(" ", 1)
    assert mean == "+1.5"
    low, high = (float(value) for value in interval.strip("[]").split(", "))
    assert 0.0 <= low <= 1.5 <= high <= 3.0
    # A mean of +1.5 could be one cell's +6: the spread says 3 of the 4 cells rose, and by at most 3.
    assert convergence.cell_spread(change) == "3 of 4 up, +0.0 to +3.0"


def test_a_step_whose_second_point_is_still_running_compares_means_on_the_cells_both_ran(convergence):
    def point(values):
        return pd.DataFrame([{"partition": partition, "seed": seed, "method": "energy", "auroc": value}
                             for (partition, seed), value in values.items()])

    first = point({("0-5", 0): 0.60, ("0-5", 1): 0.90, ("1-6", 0): 0.70})
    second = point({("0-5", 0): 0.62, ("1-6", 0): 0.71})  # seed 1 has not run yet
    # Over each point's own cells the means are 72.5 and 66.5, a 6-point fall that seed 1's 0.90 alone makes;
    # over the two cells both ran they are 65.0 and 66.5.
    assert convergence.mean_auroc(first)["energy"] - convergence.mean_auroc(second)["energy"] == pytest.approx(6.0)
    *shared, cells = convergence.on_shared_cells(first, second)
    assert [len(frame) for frame in shared] == [2, 2] and cells == [("0-5", 0), ("1-6", 0)]
    shift, mover, swaps = convergence.stable_step(*(convergence.mean_auroc(frame) for frame in shared), 2.0)
    assert shift == pytest.approx(1.5) and mover == "energy" and swaps == []


def test_the_report_pairs_accuracy_too(convergence):
    def point(accuracies):
        return pd.DataFrame([{"protocol": "setting1", "dataset": "fashion_mnist", "partition": partition, "seed": 0,
                              "method": "softmax", "auroc": 0.7, "accuracy": accuracy}
                             for partition, accuracy in zip(["0-5", "1-6", "2-7"], accuracies)])

    frames = {"w16": point([0.930, 0.920, 0.940]), "w32": point([0.935, 0.918, 0.950])}  # +0.5, -0.2, +1.0
    change = convergence.paired_change(frames, "softmax", "w16", "w32", "accuracy")
    assert convergence.format_change(change).startswith("+0.4 [")
    assert convergence.cell_spread(change) == "2 of 3 up, -0.2 to +1.0"


def test_accuracy_rows_show_the_classifier_and_every_network_of_a_methods_own(convergence):
    means = {"e8": pd.Series({"cmg_e": 64.6, "energy": 66.0}), "e16": pd.Series({"cmg_e": 66.6, "energy": 67.0})}
    costs = {"e8": 10.0, "e16": 20.0}
    without = convergence.point_table(means, {"e8": pd.Series({"cmg_e": 90.1}), "e16": pd.Series({"cmg_e": 91.0})},
                                      costs)
    assert list(without.index) == ["cmg_e", "energy", "(accuracy, cmg_e)", "(cost, core-minutes)"]
    # energy scores the classifier softmax reads: one row for both; cmg_e fine-tunes it: a row of its own.
    accuracy = {"e8": pd.Series({"softmax": 90.5, "energy": 90.5, "cmg_e": 90.9}),
                "e16": pd.Series({"softmax": 91.4, "energy": 91.4, "cmg_e": 91.4})}
    with_softmax = convergence.point_table(means, accuracy, costs)
    assert with_softmax.loc["(accuracy, classifier)"].tolist() == [90.5, 91.4]
    assert with_softmax.loc["(accuracy, cmg_e)"].tolist() == [90.9, 91.4]
    assert "(accuracy, energy)" not in with_softmax.index


def test_a_step_too_noisy_to_measure_is_undecided_not_stable(convergence):
    def change(low, high):
        if low is None:
            return SimpleNamespace(ci_low=None, ci_high=None)
        return SimpleNamespace(ci_low=low / 100, ci_high=high / 100)

    tight, loose = change(-1.0, 1.6), change(-2.9, 4.3)  # half-widths 1.3 and 3.6 points
    assert convergence.step_verdict(0.6, [], [tight], 1.0, 2.0) == "yes"
    assert convergence.step_verdict(0.6, [], [tight, loose], 1.0, 2.0) == "undecided"
    assert convergence.step_verdict(0.6, [], [change(None, None)], 1.0, 2.0) == "undecided"  # one cell: no interval
    # A move beyond the tolerance or a swap is decided whatever the noise.
    assert convergence.step_verdict(2.8, [], [loose], 1.0, 2.0) == "no"
    assert convergence.step_verdict(0.5, ["a/b (+3.0 -> -1.0)"], [tight], 1.0, 2.0) == "no"


def test_per_cell_changes_show_which_cells_make_a_mean_change(convergence):
    def point(values):
        return pd.DataFrame([{"protocol": "setting1", "dataset": "fashion_mnist", "partition": partition, "seed": seed,
                              "method": "softmax", "auroc": value}
                             for (partition, seed), value in values.items()])

    first = point({("0-5", 0): 0.60, ("1-6", 0): 0.70, ("2-7", 0): 0.80})
    second = point({("0-5", 0): 0.66, ("1-6", 0): 0.69})  # 2-7 has not run yet: it has no change
    changes = convergence.cell_changes({"e8": first, "e16": second}, "softmax", "e8", "e16")
    assert changes.round(6).to_dict() == {("0-5", 0): 6.0, ("1-6", 0): -1.0}


def test_a_step_counts_the_cells_whose_ends_trained_alike(convergence):
    def record(trial_id, partition, threads=2, platform="fc-v1300", trained_on=True, cpu_known=True):
        cpu = {"model": "AMD EPYC", "capability": "AVX2", "threads": threads} if cpu_known else None
        where = {"device": "cpu", "platform": platform, "gpu": None, "cpu": cpu}
        model = {"key": trial_id, "train_seconds": 1.0, **({"trained_on": where} if trained_on else {})}
        return {"trial_id": trial_id, "partition": partition, "seed": 0, "timing": {"shared_models": {"classifier": model}}}

    cells = [("0-5", 0), ("1-6", 0), ("2-7", 0), ("3-8", 0), ("4-9", 0)]
    records = [record("a0", "0-5"), record("a1", "1-6"), record("a2", "2-7"), record("a3", "3-8", trained_on=False),
               record("a4", "4-9", cpu_known=False),
               record("b0", "0-5"), record("b1", "1-6", threads=1), record("b2", "2-7", platform="fc-v1272"),
               record("b3", "3-8"), record("b4", "4-9", cpu_known=False)]
    first = convergence.training_places(records, {"a0", "a1", "a2", "a3", "a4"})
    second = convergence.training_places(records, {"b0", "b1", "b2", "b3", "b4"})
    assert first[("3-8", 0)] is None  # a record from before models said where they trained
    assert first[("4-9", 0)] is None  # a model trained on a CPU whose kernels and threads nobody wrote down
    # 0-5 trained alike; 1-6 with another thread count and 2-7 on another host did not; 3-8 and 4-9 cannot tell.
    assert convergence.trained_alike(first, second, cells) == "1 of 5 (2 unrecorded)"
