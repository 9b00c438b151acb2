"""The shared contract every registered method must meet, end to end on real Fashion-MNIST."""
from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
import torch

import methods
from bench.method import METHODS, Detector, MethodSpec
from bench.metrics import ood_metrics


def test_every_method_module_registers_a_method():
    registered_modules = {entry.cls.__module__ for _, entry in METHODS.items()}
    for module in pkgutil.iter_modules(methods.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"methods.{module.name}")
            assert f"methods.{module.name}" in registered_modules, f"methods/{module.name}.py registers nothing"


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, smoke_context, smoke_test_images):
    """Constructed from defaults alone, fitted on ID training data, returns finite per-image ID scores."""
    method = MethodSpec(name).build()
    assert isinstance(method, Detector)
    assert type(method)(**method.params()).params() == method.params()  # rebuildable from its parameters
    ctx = smoke_context(MethodSpec(name))
    assert method.fit(ctx) is method
    id_images, id_labels, ood_images = smoke_test_images
    with torch.no_grad():
        id_prediction, ood_prediction = method.predict(id_images), method.predict(ood_images)
    assert id_prediction.score.shape == (len(id_images),)
    assert torch.isfinite(id_prediction.score).all() and torch.isfinite(ood_prediction.score).all()
    assert id_prediction.label.shape == (len(id_images),)
    assert 0 <= int(id_prediction.label.min()) and int(id_prediction.label.max()) < ctx.task.num_classes
    accuracy = (id_prediction.label == id_labels).float().mean()
    assert accuracy > 0.5, f"{name}: closed-set accuracy {accuracy:.2f} on 6 Fashion-MNIST classes"
    metrics = ood_metrics(id_prediction.score.numpy(), ood_prediction.score.numpy())
    assert all(np.isfinite(v) for v in metrics.values())


def test_unknown_parameter_is_a_clear_error():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="no parameter sigmaa"):
        MethodSpec("cmg_e", (("sigmaa", 1),)).build()
