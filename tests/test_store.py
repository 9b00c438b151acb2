"""Cache keys cover every input; writes are atomic; the registry refuses ambiguity."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from bench import store
from bench.errors import BenchError
from bench.protocol import PROTOCOLS
from bench.recipes import parse_overrides, recipe_for
from bench.registry import Registry
from bench.shared import SHARED_MODELS
from bench.store import ModelCache, ResultStore, content_key


def test_cache_key_changes_with_every_input():
    spec = SHARED_MODELS.get("classifier")
    first, second = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5", "1-6"])
    recipe = recipe_for("demo", (1, 28, 28))
    base = spec.key(first, recipe, 0, {})
    cvae_base = SHARED_MODELS.get("cvae").key(first, recipe, 0, {})
    assert base == spec.key(first, recipe, 0, {})
    assert base != spec.key(second, recipe, 0, {})  # other classes
    assert base != spec.key(first, recipe, 1, {})  # other seed
    assert base != spec.key(first, recipe_for("smoke", (1, 28, 28)), 0, {})  # other recipe
    assert base != spec.key(first, recipe, 0, {"cvae": "abc"})  # other dependency
    # A recipe entry that only the CVAE reads does not retrain the classifier, and vice versa.
    cvae_longer = dataclasses.replace(recipe, overrides=parse_overrides(["cvae.epochs=9"]))
    assert base == spec.key(first, cvae_longer, 0, {})
    assert SHARED_MODELS.get("cvae").key(first, cvae_longer, 0, {}) != cvae_base
    classifier_longer = dataclasses.replace(recipe, overrides=parse_overrides(["classifier.epochs=4"]))
    assert base != spec.key(first, classifier_longer, 0, {})
    assert SHARED_MODELS.get("cvae").key(first, classifier_longer, 0, {}) == cvae_base


_REAL_GETSOURCE = inspect.getsource


@pytest.fixture
def fresh_hashes():
    """Source hashes are memoised per process: drop them before and after a test that fakes edits."""
    store.source_hash.cache_clear()
    store.code_closure.cache_clear()
    yield
    store.source_hash.cache_clear()
    store.code_closure.cache_clear()


def _edited_source(monkeypatch, *modules):
    """Pretend `modules` (and only they) were edited: their source gains a statement."""
    def getsource(obj):
        text = _REAL_GETSOURCE(obj)
        return text + "\n_edited = True\n" if getattr(obj, "__name__", None) in modules else text

    monkeypatch.setattr(inspect, "getsource", getsource)
    store.source_hash.cache_clear()
    store.code_closure.cache_clear()


def test_model_keys_survive_edits_to_the_harness_but_not_to_their_own_code(monkeypatch, fresh_hashes):
    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]
    recipe = recipe_for("demo", (1, 28, 28))
    kinds = ["classifier", "cvae", "moodcat_generator"]
    before = {kind: SHARED_MODELS.get(kind).key(task, recipe, 0, {}) for kind in kinds}
    _edited_source(monkeypatch, "bench.runner", "bench.method", "bench.shared", "bench.recipes", "bench.store",
                   "bench.cli", "bench.reports", "methods.cmg")
    assert {kind: SHARED_MODELS.get(kind).key(task, recipe, 0, {}) for kind in kinds} == before
    _edited_source(monkeypatch, "bench.training")  # the training loop computes every model's weights
    assert all(SHARED_MODELS.get(kind).key(task, recipe, 0, {}) != before[kind] for kind in ("classifier", "cvae"))
    _edited_source(monkeypatch, "bench.nets.cvae")  # one network's code retrains that network only
    assert SHARED_MODELS.get("classifier").key(task, recipe, 0, {}) == before["classifier"]
    assert SHARED_MODELS.get("cvae").key(task, recipe, 0, {}) != before["cvae"]


def test_trial_ids_hash_everything_the_trial_runs(monkeypatch, fresh_hashes):
    from bench.method import MethodSpec
    from bench.runner import plan

    assert {"methods.cmg", "methods.energy", "bench.training", "bench.method"} <= set(store.code_closure("methods.cmg"))
    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]
    methods = [MethodSpec("cmg_e"), MethodSpec("react", (("net", "classifier"),)), MethodSpec("cmg_e", (("net", "react"),))]

    def trial_ids():
        return [trial.trial_id for trial in plan([task], methods, [0], "demo")[0]]

    before = trial_ids()
    _edited_source(monkeypatch, "bench.runner", "bench.cli", "bench.reports")
    assert trial_ids() == before
    _edited_source(monkeypatch, "methods.energy")  # CMG-e scores with energy; ReAct too
    after = trial_ids()
    assert all(a != b for a, b in zip(after, before))
    _edited_source(monkeypatch, "methods.energy", "methods.react")  # react+cmg_e runs ReAct's code, cmg_e not
    edited = trial_ids()
    assert edited[0] == after[0] and all(e != a for e, a in zip(edited[1:], after[1:]))


def test_content_key_is_order_independent():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_cache_round_trip_and_corruption(tmp_path):
    import torch

    cache = ModelCache(tmp_path)
    module = torch.nn.Linear(3, 2)
    cache.save("classifier", "k1", module.state_dict(), {"train_seconds": 1.5})
    assert cache.has("classifier", "k1") and cache.meta("classifier", "k1")["train_seconds"] == 1.5
    loaded = cache.load_module("classifier", "k1", lambda: torch.nn.Linear(3, 2))
    assert torch.equal(loaded.weight, module.weight)
    assert not [p for p in (tmp_path / "classifier").iterdir() if p.name.startswith(".")]  # no staging left
    with pytest.raises(BenchError, match="is corrupt"):
        cache.load_module("classifier", "k1", lambda: torch.nn.Linear(4, 2))  # wrong shapes
    (tmp_path / "classifier" / "k1" / "meta.json").write_text("{broken")
    with pytest.raises(BenchError, match="is corrupt"):
        cache.meta("classifier", "k1")


def test_result_store_writes_whole_files(tmp_path):
    store = ResultStore(tmp_path)
    store.write({"trial_id": "t1", "value": 1})
    store.write({"trial_id": "t1", "value": 2})
    assert store.records() == [{"trial_id": "t1", "value": 2}]
    assert [p.name for p in store.trials.iterdir()] == ["t1.json"]
    (store.trials / "t2.json").write_text("{half")
    with pytest.raises(BenchError, match="t2.json is unreadable"):
        store.records()


def test_registry_rules():
    registry = Registry("widget")
    registry.register("alpha", 1)
    registry.register("alpha", 1)  # the same entry again is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("alpha", 2)
    registry.register("alpine", 3)
    assert registry.names("al*") == ["alpha", "alpine"]
    with pytest.raises(BenchError, match="Did you mean alpha"):
        registry.get("alpah")


def test_tables_count_only_the_newest_record_of_a_trial(tmp_path):
    store = ResultStore(tmp_path)
    identity = {"protocol": "p", "dataset": "d", "partition": "0-5", "seed": 0, "method": "m", "scale": "smoke"}
    timing = {"summary": {"fit_s": 1.0, "score_s": 1.0, "shared_s": 0.0, "total_s": 2.0}}
    for trial_id, finished, auroc in (("old", "2026-01-01T00:00:00", 0.5), ("new", "2026-02-01T00:00:00", 0.9)):
        store.write({"trial_id": trial_id, **identity, "metrics": {"auroc": auroc}, "timing": timing,
                     "provenance": {"finished": finished}, "ood_sets": {}})
    frame = store.frame()
    assert frame["trial_id"].tolist() == ["new"] and frame["auroc"].tolist() == [0.9]


def test_comments_and_recipe_tables_do_not_enter_code_hashes(monkeypatch, fresh_hashes):
    """A comment, or another scale's recipe entry, cannot change a weight: both keep every key."""
    before = store.code_hash("bench.shared_models.classifier")

    def getsource(obj):
        text = _REAL_GETSOURCE(obj)
        if getattr(obj, "__name__", None) == "bench.shared_models.classifier":
            text = text.replace('("gray28", "paper"): Stage("cnn9", None, 100,', '("gray28", "paper"): Stage("cnn9", None, 7,')
            return text + "\n# a new comment\n"
        return text

    monkeypatch.setattr(inspect, "getsource", getsource)
    store.source_hash.cache_clear()
    assert "Stage(\"cnn9\", None, 7," in inspect.getsource(__import__("bench.shared_models.classifier").shared_models.classifier)
    assert store.code_hash("bench.shared_models.classifier") == before


def test_code_hashes_need_no_optional_package_installed(monkeypatch, fresh_hashes):
    """A machine without ray (a bare GPU box running `--executor local`) keys models as any other: a
    `from ray... import` inside the hashed modules is skipped, not imported."""
    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]
    recipe = recipe_for("demo", (1, 28, 28))
    before = SHARED_MODELS.get("osrci").key(task, recipe, 0, {})
    real_find_spec = store.importlib.util.find_spec

    def find_spec(name, *args):
        if name.split(".")[0] == "ray":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_find_spec(name, *args)

    monkeypatch.setattr(store.importlib.util, "find_spec", find_spec)
    store.source_hash.cache_clear()
    store.code_closure.cache_clear()
    assert SHARED_MODELS.get("osrci").key(task, recipe, 0, {}) == before
