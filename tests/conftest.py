"""Shared fixtures: smoke-scale runs on a real Fashion-MNIST subset, with a cache per test session."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bench.method import FitContext
from bench.protocol import PROTOCOLS
from bench.runner import Settings, plan, train_shared_model, build_cached, load_ref, seed_everything
from bench.method import MethodSpec


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never try the network and never touch the user's cache."""
    monkeypatch.setenv("BENCH_DOWNLOAD", "0")


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="session")
def smoke_task():
    return PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]


@pytest.fixture(scope="session")
def smoke_context(smoke_task, smoke_cache, tmp_path_factory):
    """A FitContext for partition 0-5 at smoke scale, holding the trained (cached) shared models
    that `method` needs (by default CMG-e's classifier and CVAE)."""
    settings = Settings(out=str(tmp_path_factory.mktemp("out")), cache=smoke_cache, cpus_per_trial=1)

    def make(method: MethodSpec = MethodSpec("cmg_e"), seed=0):
        trials, jobs = plan([smoke_task], [method], [seed], "smoke")
        for job in jobs.values():
            train_shared_model(job, settings)
        recipe = trials[0].recipe
        models = {kind: build_cached(kind, key, smoke_task, recipe, settings) for kind, key in trials[0].models}
        train = load_ref(smoke_task.id_train, settings, recipe.train_limit, seed)
        validation = load_ref(smoke_task.id_val, settings, recipe.test_limit, seed)
        return FitContext(smoke_task, train, models, recipe, seed, torch.device("cpu"), seed_everything(seed),
                          validation=validation)

    return make


@pytest.fixture(scope="session")
def smoke_test_images(smoke_task):
    """ID and OOD test images (float in [0, 1]) for partition 0-5."""
    settings = Settings(out="unused")
    id_test = load_ref(smoke_task.id_test, settings, 300, 0)
    ood_test = load_ref(smoke_task.ood_tests["unknown_classes"], settings, 300, 0)
    return id_test.images.float() / 255, id_test.labels, ood_test.images.float() / 255


@pytest.fixture
def one_line_error(capsys):
    """Run the CLI on `argv`, expect exit status 2 and one `bench: error:` line without a traceback; return it."""
    from bench.cli import main

    def run(argv) -> str:
        assert main(argv) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bench: error: "), captured.err
        assert "Traceback" not in captured.err
        return lines[0]

    return run


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_script():
    """Loads a script of benchmarks/ (not a package) as a module, for tests of its functions."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
