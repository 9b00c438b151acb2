"""The re-run noise report (benchmarks/rerun_noise.py), on hand-made records."""
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def rerun_noise(benchmark_script):
    return benchmark_script("rerun_noise")


def records(rows):
    return pd.DataFrame([{"trial_id": trial, "protocol": "setting1", "dataset": "fashion_mnist", "scale": "demo",
                          "overrides": recipe, "method": method, "partition": "0-5", "seed": seed, "auroc": auroc,
                          "accuracy": 0.9} for trial, recipe, method, seed, auroc in rows])


def test_a_rerun_is_paired_by_trial_id_and_set_against_two_seeds_of_its_own_group(rerun_noise):
    store = records([("a0", "e=8", "energy", 0, 0.70), ("a1", "e=8", "energy", 1, 0.74), ("a2", "e=8", "energy", 2, 0.68),
                     # Another recipe: no re-run of it, so its seeds (12 points apart) are not the comparison.
                     ("b0", "e=16", "energy", 0, 0.60), ("b1", "e=16", "energy", 1, 0.72)])
    rerun = records([("a0", "e=8", "energy", 0, 0.72), ("a1", "e=8", "energy", 1, 0.73),
                     ("z9", "e=8", "energy", 3, 0.50)])  # a trial the first store never ran: unpaired
    reruns = rerun_noise.rerun_differences(store, rerun)
    assert sorted(reruns["auroc"].round(6)) == [-1.0, 2.0] and (reruns["accuracy"] == 0).all()
    seeds = rerun_noise.seed_differences(store, reruns)
    # Seeds 0, 1, 2 of e=8 differ by -4, +2 and +6 points, each counted both ways.
    assert sorted(seeds["auroc"].round(6)) == [-6.0, -4.0, -2.0, 2.0, 4.0, 6.0]
    row = rerun_noise.summary(reruns, seeds).loc["(all)"]
    assert row["re-runs"] == 2 and row["seed pairs"] == 3
    assert row["mean"] == pytest.approx(0.5) and row["SD"] == pytest.approx(2 ** 0.5 * 1.5)
    assert row["mean size"] == pytest.approx(1.5)
    assert row["two-seed SD"] == pytest.approx((56 / 3) ** 0.5)  # (16 + 4 + 36) / 3


def test_a_folder_without_records_is_one_line_not_a_traceback(rerun_noise, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["rerun_noise.py", "--store", str(tmp_path / "none"), "--rerun", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        rerun_noise.main()
    assert str(exit_.value) == f"no trial records in {tmp_path / 'none'}/trials: give the --out folder of a bench run"
