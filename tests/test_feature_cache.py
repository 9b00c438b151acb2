"""Cached network outputs (`bench.features`): one forward pass per trained network and data split,
shared by every post-hoc method, with the same numbers as running the network each time."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import threading

import numpy as np
import pytest
import torch
from torch import nn

from bench import features, scoring
from bench.cli import main
from bench.features import FeatureCache, fingerprint
from bench.method import MethodSpec, parse_methods
from bench.nets.backbones import Classifier
from bench.runner import Settings, plan, train_shared_model
from bench.store import ModelCache, ResultStore

POST_HOC = "softmax,maxlogit,energy,odin,mahalanobis,react,knn,openmax"
SMOKE = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke",
         "--executor", "local", "--cpus-per-trial", "1", "--force"]
SPLITS = 2000 + 600 + 600  # smoke scale: ID training images, ID test images, OOD test images


@pytest.fixture(scope="module")
def trials(smoke_task, smoke_cache):
    """The smoke trials of the eight post-hoc methods on one classifier (trained once, in the session's cache)."""
    planned, jobs = plan([smoke_task], parse_methods(POST_HOC), [0], "smoke")
    for job in jobs.values():
        train_shared_model(job, Settings(out="unused", cache=smoke_cache, cpus_per_trial=1))
    return planned


@pytest.fixture
def settings(tmp_path, smoke_cache, trials, monkeypatch):
    """Settings whose model cache holds the trained classifier and no cached outputs yet."""
    monkeypatch.delenv("BENCH_FEATURE_CACHE", raising=False)
    root = tmp_path / "cache"
    for kind, key in {pair for trial in trials for pair in trial.models}:
        shutil.copytree(ModelCache(smoke_cache).folder(kind, key), ModelCache(root).folder(kind, key))
    return Settings(out=str(tmp_path / "out"), cache=str(root), cpus_per_trial=1)


@pytest.fixture
def forward_passes(monkeypatch):
    """The size of every batch the classifier's forward_features runs on."""
    sizes = []
    original = Classifier.forward_features

    def counting(self, x):
        sizes.append(len(x))
        return original(self, x)

    monkeypatch.setattr(Classifier, "forward_features", counting)
    return sizes


@pytest.fixture
def scores(monkeypatch):
    """Every score and label array that scoring computes, in order."""
    seen = []
    original = scoring._predict_all

    def keeping(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(scoring, "_predict_all", keeping)
    return seen


def feature_files(settings):
    return sorted((ModelCache(settings.cache).root / "features").rglob("*.pt"))


def bench_run(settings, methods: str, out: str | None = None) -> dict:
    """`bench run` of `methods` on the smoke task in-process; the records, by method."""
    out = out or settings.out
    assert main(["run", "--methods", methods, *SMOKE, "--out", out, "--cache", settings.cache]) == 0
    return {record["method"]: record for record in ResultStore(out).records()}


def test_the_second_post_hoc_method_on_a_network_reads_its_outputs_from_the_cache(settings, trials, forward_passes):
    bench_run(settings, "mahalanobis")  # fits on the training split, scores the two test splits
    assert sum(forward_passes) == SPLITS
    assert len(feature_files(settings)) == 3
    forward_passes.clear()
    bench_run(settings, "softmax,maxlogit,energy,react,knn,openmax,mahalanobis")
    assert forward_passes == []
    bench_run(settings, "odin")  # ODIN perturbs its inputs: it runs the network on the test splits itself
    assert sum(forward_passes) == 600 + 600


def test_every_post_hoc_score_is_bit_identical_with_and_without_the_cache(settings, trials, scores, monkeypatch):
    def run_all(out):
        return bench_run(settings, POST_HOC, out)

    monkeypatch.setenv("BENCH_FEATURE_CACHE", "0")
    without = run_all(settings.out + "-without")
    assert feature_files(settings) == []
    scores_without = list(scores)
    scores.clear()
    monkeypatch.setenv("BENCH_FEATURE_CACHE", "1")
    cached = run_all(settings.out + "-with")
    assert len(feature_files(settings)) == 3
    assert len(scores) == len(scores_without) == 2 * len(trials) and len(cached) == len(trials)
    for (score, label), (score_without, label_without) in zip(scores, scores_without, strict=True):
        assert np.array_equal(score, score_without) and np.array_equal(label, label_without)
    for method, record in cached.items():
        assert record["metrics"] == without[method]["metrics"], method
        assert record["ood_sets"] == without[method]["ood_sets"], method


def test_a_damaged_feature_file_is_computed_again_with_a_warning(settings, trials, forward_passes, caplog):
    before = bench_run(settings, "knn")["knn"]["metrics"]
    damaged, truncated, other_images = feature_files(settings)
    damaged.write_bytes(b"not a torch file")
    truncated.write_bytes(truncated.read_bytes()[:100])
    saved = torch.load(other_images, weights_only=True)
    torch.save({**saved, "images": "another fingerprint"}, other_images)
    forward_passes.clear()
    with caplog.at_level(logging.WARNING, logger="bench.features"):
        after = bench_run(settings, "knn")["knn"]["metrics"]
    assert sum(forward_passes) == SPLITS
    warned = [record.getMessage() for record in caplog.records if "computing them again" in record.getMessage()]
    assert len(warned) == 3 and "other images" in " ".join(warned)
    assert after == before
    forward_passes.clear()
    bench_run(settings, "mahalanobis")  # the files written again are whole
    assert forward_passes == []


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.final_layer = nn.Linear(16, 3)
        self.calls = 0

    def forward_features(self, x):
        self.calls += 1
        penultimate = x.flatten(1)
        return self.final_layer(penultimate), penultimate


def test_the_split_key_changes_with_whatever_changes_the_outputs(tmp_path, smoke_task, monkeypatch):
    network, ref = _Toy(), smoke_task.id_train
    cache = FeatureCache(tmp_path, {"classifier": "a" * 24})
    base = cache.path("classifier", network, ref, 2000, 0)
    assert base == FeatureCache(tmp_path, {"classifier": "a" * 24}).path("classifier", _Toy(), ref, 2000, 0)
    assert base.parent == tmp_path / "features" / "classifier" / ("a" * 24)
    changed = [
        FeatureCache(tmp_path, {"classifier": "b" * 24}).path("classifier", network, ref, 2000, 0),  # the network's key
        cache.path("classifier", network, smoke_task.id_test, 2000, 0),  # the data
        cache.path("classifier", network, dataclasses.replace(ref, classes=(0, 1)), 2000, 0),
        cache.path("classifier", network, ref, None, 0),  # the subset
        cache.path("classifier", network, ref, 2000, 1),
        cache.path("classifier", _Toy().double(), ref, 2000, 0),  # the dtype
    ]
    monkeypatch.setattr(features, "code_hash", lambda *_: "other code")
    changed.append(cache.path("classifier", network, ref, 2000, 0))
    assert len({base, *changed}) == len(changed) + 1


def test_a_run_waits_for_another_computing_the_same_split_then_reads_its_file(tmp_path, smoke_task):
    network, ref = _Toy(), smoke_task.id_test
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    cache = FeatureCache(tmp_path, {"toy": "k"})
    outputs = network.final_layer(torch.ones(10, 16)), torch.ones(10, 16)
    got = []
    with cache.lock(cache.parts("toy", network, ref, None, 0)):  # held by another run that is computing these outputs
        waiting = threading.Thread(target=lambda: got.append(cache.outputs("toy", network, ref, None, 0, images, "cpu")))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not got
        cache._write(cache.parts("toy", network, ref, None, 0), outputs, fingerprint(images), "cpu")
    waiting.join(10)
    assert network.calls == 0 and torch.equal(got[0][1], outputs[1])


def test_no_cache_without_a_trained_networks_key(tmp_path, smoke_context, smoke_test_images):
    """A network a method provides (knn[net=react]) runs itself, and still scores as without any cache."""
    ctx = smoke_context(MethodSpec("knn", (("net", "react"),)))
    cached = dataclasses.replace(ctx, features=FeatureCache(tmp_path, {"classifier": "k"}))
    plain = MethodSpec("knn", (("net", "react"),)).build().fit(ctx)
    method = MethodSpec("knn", (("net", "react"),)).build().fit(cached)
    assert method.features_ is None
    assert sorted(p.parent.parent.name for p in (tmp_path / "features").rglob("*.pt")) == ["classifier"]  # ReAct's fit
    images = smoke_test_images[0]
    assert torch.equal(method.predict(images).score, plain.predict(images).score)


def test_a_cache_at_a_url_keeps_outputs_too(tmp_path, smoke_task):
    network, ref = _Toy(), smoke_task.id_test
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    cache = FeatureCache(f"memory://{tmp_path.name}/cache", {"toy": "k"})
    first = cache.outputs("toy", network, ref, None, 0, images, "cpu")
    again = FeatureCache(f"memory://{tmp_path.name}/cache", {"toy": "k"}).outputs(
        "toy", network, ref, None, 0, images, "cpu")
    assert network.calls == 1 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    cache.cache.storage.fs.pipe_file(cache.path("toy", network, ref, None, 0), b"damaged")
    cache.outputs("toy", network, ref, None, 0, images, "cpu")
    assert network.calls == 2
