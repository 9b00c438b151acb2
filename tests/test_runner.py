"""The runner: shared models trained once, records complete, resume after a kill, Ray and local."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.method import parse_methods
from bench.runner import Settings, run
from bench.shared import SHARED_MODELS
from bench.store import ResultStore

SMOKE = dict(datasets=["fashion_mnist"], partitions=["0-5"], scale="smoke", executor="local")


@pytest.fixture
def count_trainings(monkeypatch):
    """Count how often each shared model kind is actually trained."""
    counts = {}
    for kind, spec in list(SHARED_MODELS.items()):
        def counting(model, inputs, _train=spec.train, _kind=kind):
            counts[_kind] = counts.get(_kind, 0) + 1
            return _train(model, inputs)

        monkeypatch.setitem(SHARED_MODELS._entries, kind, dataclasses.replace(spec, train=counting))
    return counts


def test_shared_classifier_is_trained_once_for_all_methods(tmp_path, count_trainings):
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"))
    summary = run("setting1", parse_methods("softmax,energy,cmg_e"), settings=settings, **SMOKE)
    assert summary == {"trials": 3, "ran": 3, "skipped": 0, "trained": 2}
    assert count_trainings == {"classifier": 1, "cvae": 1}
    # A later run with another method reuses both cached models.
    run("setting1", parse_methods("cmg_s"), settings=settings, **SMOKE)
    assert count_trainings == {"classifier": 1, "cvae": 1}
    assert len(list((tmp_path / "cache" / "classifier").iterdir())) == 1


def test_records_charge_every_shared_model(tmp_path):
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"))
    run("setting1", parse_methods("softmax,cmg_e"), settings=settings, **SMOKE)
    records = {r["method"]: r for r in ResultStore(settings.out).records()}
    assert set(records["softmax"]["timing"]["shared_models"]) == {"classifier"}
    assert set(records["cmg_e"]["timing"]["shared_models"]) == {"classifier", "cvae"}
    # Where each model trained, so that two recipes' ends can be checked for training alike.
    trained_on = records["cmg_e"]["timing"]["shared_models"]["cvae"]["trained_on"]
    assert trained_on["device"] == "cpu" and trained_on["gpu"] is None
    assert trained_on["platform"] == records["cmg_e"]["provenance"]["platform"]
    assert trained_on["cpu"]["threads"] == settings.threads()
    for record in records.values():
        timing = record["timing"]["summary"]
        assert timing["total_s"] == pytest.approx(timing["fit_s"] + timing["score_s"] + timing["shared_s"])
        assert set(record["metrics"]) == {"auroc", "fpr95", "fpr95_oodpos", "aupr_in", "aupr_out", "accuracy"}
        assert record["ood_sets"]["unknown_classes"]["n_ood"] == 600
        assert record["data"] == {"id_train": 2000, "id_test": 600, "unknown_classes": 600}
        assert record["provenance"]["finished"]
    frame = ResultStore(settings.out).frame()
    assert sorted(frame["method"]) == ["cmg_e", "softmax"]


def test_finished_trials_are_skipped_and_force_redoes_them(tmp_path):
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"))
    run("setting1", parse_methods("softmax"), settings=settings, **SMOKE)
    assert run("setting1", parse_methods("softmax"), settings=settings, **SMOKE) == {"trials": 1, "ran": 0, "skipped": 1}
    assert run("setting1", parse_methods("softmax"), settings=settings, force=True, **SMOKE)["ran"] == 1


def test_resume_after_the_run_is_killed(tmp_path):
    """Kill a run after its first result lands; the rerun keeps that result and does the rest."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    command = [sys.executable, "-m", "bench", "run", "--methods", "softmax,energy,cmg_s,cmg_e", "--protocol",
               "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke",
               "--executor", "local", "--out", str(out), "--cache", str(cache)]
    env = {**os.environ, "BENCH_DOWNLOAD": "0"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    trials = out / "trials"
    deadline = time.monotonic() + 300
    while not list(trials.glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = {p.name: p.read_text() for p in trials.glob("*.json")}
    assert first, "the run was killed before its first record"
    assert all(json.loads(text)["metrics"] for text in first.values())  # complete, never half-written

    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{len(first)} of 4 trials already have results" in result.stderr
    after = {p.name: p.read_text() for p in trials.glob("*.json")}
    assert len(after) == 4
    assert all(after[name] == text for name, text in first.items())
    assert not list(trials.glob(".*.tmp"))


def test_ray_executor_runs_trials_after_their_shared_models(tmp_path):
    pytest.importorskip("ray")
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"))
    options = {**SMOKE, "executor": "ray", "partitions": ["0-5", "1-6"]}
    summary = run("setting1", parse_methods("softmax,cmg_e"), settings=settings, **options)
    assert summary == {"trials": 4, "ran": 4, "skipped": 0, "trained": 4}
    assert len(ResultStore(settings.out).records()) == 4
    assert len(list(Path(settings.cache, "classifier").iterdir())) == 2
    assert len(list(Path(settings.cache, "cvae").iterdir())) == 2
