"""Per-image scores stored beside each record: round trip, exact recomputation of the metrics, damage detected."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.errors import BenchError
from bench.metrics import metrics_from_samples
from bench.store import ResultStore


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, smoke_cache):
    from bench.cli import main

    out = tmp_path_factory.mktemp("scores") / "out"
    assert main(["run", "--methods", "softmax,energy", "--protocol", "setting1", "--datasets", "fashion_mnist",
                 "--partitions", "0-5", "--scale", "smoke", "--executor", "local", "--out", str(out),
                 "--cache", smoke_cache]) == 0
    return out


def test_scores_round_trip_and_recompute_the_stored_metrics_exactly(stored_run):
    store = ResultStore(stored_run)
    for record in store.records():
        samples = store.samples(record)
        assert set(samples) == {"id_test", "unknown_classes"}
        assert len(samples["id_test"]["score"]) == record["data"]["id_test"] == 600
        assert samples["id_test"]["score"].dtype == np.float32 and not samples["id_test"]["is_ood"].any()
        assert samples["unknown_classes"]["is_ood"].all()
        summary, per_set = metrics_from_samples(samples)
        assert summary == record["metrics"] and per_set == record["ood_sets"]  # exactly, not approximately
        assert record["scores"]["images"] == 1200 and record["scores"]["bytes"] > 0
    frame = store.scores(method="energy")
    assert len(frame) == 1200 and set(frame["set"]) == {"id_test", "unknown_classes"}
    assert {"trial_id", "method", "partition", "seed", "score", "label", "target", "is_ood"} <= set(frame.columns)
    assert store.frame(recompute=True)[["method", "auroc"]].equals(store.frame()[["method", "auroc"]])


def test_table_recompute_equals_the_stored_table(stored_run, capsys):
    from bench.cli import main

    assert main(["table", "1", "--out", str(stored_run)]) == 0
    stored = capsys.readouterr().out
    assert main(["table", "1", "--out", str(stored_run), "--recompute"]) == 0
    assert capsys.readouterr().out == stored


def test_changed_scores_or_missing_scores_are_one_line_errors(stored_run, tmp_path, one_line_error):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(stored_run, out)
    record_file = next((out / "trials").glob("*.json"))
    record = json.loads(record_file.read_text())
    store = ResultStore(out)
    samples = store.samples(record)
    samples["id_test"]["score"][0] = -1e6  # one image's score changed
    store.write(record, samples)
    assert "do not give its stored metrics" in one_line_error(["table", "1", "--out", str(out), "--recompute"])
    del record["scores"]
    record_file.write_text(json.dumps(record))
    assert "has no stored scores" in one_line_error(["table", "1", "--out", str(out), "--recompute"])
    with pytest.raises(BenchError, match="has no stored scores"):
        store.recomputed(record)


def test_export_writes_a_row_per_trial_or_per_ood_set_with_parameters_as_columns(stored_run, tmp_path, capsys):
    import pandas as pd

    from bench.cli import main

    assert main(["export", "--out", str(stored_run), "--output", str(tmp_path / "trials.parquet")]) == 0
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert sorted(trials["method"]) == ["energy", "softmax"] and {"auroc", "fpr95", "accuracy", "fit_s"} <= set(trials)
    assert trials.set_index("method").loc["energy", "param.temperature"] == 1.0
    assert (trials["param.net"] == "classifier").all() and list(trials.columns)[-2:] == ["param.net", "param.temperature"]
    assert main(["export", "--out", str(stored_run), "--output", str(tmp_path / "sets.csv"), "--per-ood-set"]) == 0
    sets = pd.read_csv(tmp_path / "sets.csv")
    assert len(sets) == 2 and set(sets["ood_set"]) == {"unknown_classes"}
    stored = ResultStore(stored_run).frame().set_index("method")["auroc"]
    assert sets.set_index("method")["auroc"].to_dict() == pytest.approx(stored.to_dict(), abs=0)


def test_export_refuses_an_unknown_format(stored_run, tmp_path, one_line_error):
    assert "unknown export format 'xlsx'" in one_line_error(
        ["export", "--out", str(stored_run), "--output", str(tmp_path / "x.xlsx")])
