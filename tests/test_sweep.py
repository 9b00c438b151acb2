"""`bench sweep`: search spaces, choosing on validation data only, feature reuse, and the CLI end to end."""
from __future__ import annotations

import dataclasses
import json

import pytest

from bench.data import DatasetSource, DATASETS
from bench.method import MethodSpec
from bench.protocol import PROTOCOLS, DataRef
from bench.runner import Settings
from bench.sweep import Cell, _best, parse_space, validation_metrics, validation_view


def test_a_grid_and_random_draws_are_parsed_and_checked_as_method_options():
    space = parse_space(MethodSpec("odin"), "temperature=1,10,1000; epsilon=0,0.0014", None, None)
    assert space.grid == (("temperature", (1, 10, 1000)), ("epsilon", (0, 0.0014)))
    assert space.size() == 6 and space.options == ["temperature", "epsilon"]
    space = parse_space(MethodSpec("knn"), None, "k=randint(1,200)", 5)
    assert space.random == (("k", "randint", (1, 200)),) and space.size() == 5
    space = parse_space(MethodSpec("react"), "percentile=(80),(90)", "net=choice('classifier')", 2)
    assert space.size() == 4


@pytest.mark.parametrize("grid, random, samples, message", [
    ("temperature=abc", None, None, "temperature"),
    ("temperature=-1", None, None, "temperature"),
    ("nosuch=1,2", None, None, "has no parameter nosuch"),
    ("temperature", None, None, "write option=values"),
    (None, None, None, "nothing to search"),
    (None, "temperature=normal(1,2)", None, "use one of uniform"),
    (None, "temperature=loguniform(0,10)", None, "low > 0"),
    (None, "temperature=uniform(5,1)", None, "low < high"),
    ("temperature=1,2", None, 3, "--samples counts random draws"),
    ("temperature=1;temperature=2", None, None, "searched twice"),
])
def test_bad_search_spaces_are_one_line_errors(grid, random, samples, message, one_line_error):
    argv = ["sweep", "--method", "odin", "--protocol", "setting1"]
    argv += ["--grid", grid] if grid else []
    argv += ["--random", random] if random else []
    argv += ["--samples", str(samples)] if samples else []
    assert message in one_line_error(argv)


def test_an_option_fixed_in_the_method_cannot_be_searched(one_line_error):
    assert "both fixed in --method and searched" in one_line_error(
        ["sweep", "--method", "knn[k=5]", "--grid", "k=1,2", "--protocol", "setting1"])
    assert "unknown objective" in one_line_error(
        ["sweep", "--method", "knn", "--grid", "k=1,2", "--protocol", "setting1", "--objective", "accuracy",
         "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke"])


def test_the_best_candidate_follows_the_objective_and_ties_go_first():
    rows = [{"metrics": {"auroc": 0.7, "fpr95": 0.5}, "order": 0}, {"metrics": {"auroc": 0.9, "fpr95": 0.6}, "order": 1},
            {"metrics": {"auroc": 0.9, "fpr95": 0.2}, "order": 2}, {"metrics": None, "order": 3}]
    assert _best(rows, "auroc")["order"] == 1
    assert _best(rows, "fpr95")["order"] == 2
    assert _best([{"metrics": None, "order": 0}], "auroc") is None


@pytest.fixture
def task_with_exploding_test_sets(monkeypatch):
    """Fashion-MNIST 0-5 whose ID and OOD test sets raise when loaded: only validation data may be read."""
    def explode(_root, _split):
        raise AssertionError("a test set was loaded")

    monkeypatch.setitem(DATASETS._entries, "exploding", DatasetSource(
        "exploding", 10, (1, 28, 28), ("test",), explode, "", lambda _root: ()))
    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]
    return dataclasses.replace(task, id_test=DataRef("exploding", "test", tuple(range(6))),
                               ood_tests={"unknown_classes": DataRef("exploding", "test", (6, 7, 8, 9))})


def test_the_objective_never_reads_a_test_set(task_with_exploding_test_sets, smoke_cache, tmp_path):
    from bench.runner import check_data

    task = task_with_exploding_test_sets
    view = validation_view(task)
    assert {ref.dataset for ref in view.data_refs(aux=False)} == {"fashion_mnist", "noise_rademacher", "noise_blobs"}
    settings = Settings(out=str(tmp_path / "out"), cache=smoke_cache, cpus_per_trial=1).resolved()
    check_data([view], settings)
    metrics = validation_metrics(MethodSpec("knn", (("k", 5),)), Cell(task, 0, "smoke", ()), settings)
    assert set(metrics["ood_sets"]) == {"noise_rademacher", "noise_blobs"} and 0 <= metrics["auroc"] <= 1
    with pytest.raises(AssertionError, match="a test set was loaded"):  # the fixture does explode
        check_data([task], settings)


def test_candidates_reuse_the_networks_outputs(smoke_task, smoke_cache, tmp_path, monkeypatch):
    """Every candidate after the first reads the classifier's outputs on each split from the feature cache."""
    import bench.features

    passes = []
    original = bench.features.network_outputs
    monkeypatch.setattr(bench.features, "network_outputs", lambda *a, **k: passes.append(1) or original(*a, **k))
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), cpus_per_trial=1).resolved()
    cell = Cell(smoke_task, 0, "smoke", ())
    first = validation_metrics(MethodSpec("knn", (("k", 1),)), cell, settings)
    computed = len(passes)
    assert computed == 4  # ID train, ID validation and the two validation OOD sets: once each
    second = validation_metrics(MethodSpec("knn", (("k", 50),)), cell, settings)
    assert len(passes) == computed and first["auroc"] != second["auroc"]


def test_a_task_without_validation_data_cannot_be_swept(smoke_task):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="no validation data"):
        validation_view(dataclasses.replace(smoke_task, ood_vals={}))


def test_sweep_chooses_on_validation_runs_the_best_once_on_test_and_resumes(tmp_path, smoke_cache, capsys):
    from bench.cli import main
    from bench.store import ResultStore

    out = tmp_path / "out"
    argv = ["sweep", "--method", "knn", "--grid", "k=1,50", "--protocol", "setting1", "--datasets", "fashion_mnist",
            "--partitions", "0-5", "--scale", "smoke", "--out", str(out), "--cache", smoke_cache]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (summary_file,) = (out / "sweeps").glob("*.json")
    summary = json.loads(summary_file.read_text())
    (cell,) = summary["cells"]
    assert [c["label"] for c in cell["candidates"]] == ["knn[k=1]", "knn[k=50]"]
    best = max(cell["candidates"], key=lambda c: c["metrics"]["auroc"])
    assert cell["chosen"] == best["label"] and cell["chosen"] in printed
    (record,) = ResultStore(out).records()  # only the chosen configuration ran on the test sets
    assert record["method"] == cell["chosen"]
    assert record["selection"]["sweep"] == summary["sweep_id"] and record["selection"]["candidates"] == 2
    assert record["selection"]["validation"]["auroc"] == pytest.approx(best["metrics"]["auroc"])
    assert set(record["ood_sets"]) == {"unknown_classes"}  # the test sets, not the validation ones

    assert main(argv) == 0  # the same command resumes: the search is done and the trial is stored
    again = json.loads(summary_file.read_text())
    assert again["cells"][0]["candidates"] == cell["candidates"] and len(ResultStore(out).records()) == 1


def test_an_aux_set_that_is_a_test_set_is_refused_by_a_sweep_too(one_line_error):
    assert "is its test OOD set noise_gaussian" in one_line_error(
        ["sweep", "--method", "knn", "--grid", "k=1,5", "--protocol", "far_fmnist", "--aux", "noise_gaussian",
         "--scale", "smoke"])
