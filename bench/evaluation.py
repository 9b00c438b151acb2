"""Evaluate a user's own trained classifier with every post-hoc method, without retraining.

What the model must provide:
- `model(x)` returns logits for the task's known classes, in the protocol's order, for
  float images in [0, 1] of the dataset's shape (C, H, W). Put any mean/std
  normalisation in `normalize=(mean, std)`: the harness feeds [0, 1] pixels.
- Feature-based methods (Mahalanobis, ReAct, KNN, ...) also need the penultimate features
  and the linear layer that maps them to logits. Either the model has
  `forward_features(x) -> (logits, features)` and a `final_layer` attribute (the contract
  of `bench.nets.contract`), or its last `nn.Linear` module produces the logits, as in
  torchvision's ResNets (`fc`) and VGGs (`classifier[-1]`); its input is then captured with
  a forward hook. Both are checked on two training images before anything is scored.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError
from bench.method import FitContext, MethodSpec, parse_methods, to_float
from bench.nets.contract import as_feature_classifier

log = logging.getLogger(__name__)


def single_task(protocol: str, dataset: str | None, partition: str | None):
    from bench.protocol import PROTOCOLS

    tasks = PROTOCOLS.get(protocol).tasks([dataset] if dataset else None, [partition] if partition else None)
    if len(tasks) != 1:
        names = ", ".join(f"{t.dataset} {t.partition}" for t in tasks[:6])
        raise BenchError(f"a trained model belongs to one task, but protocol {protocol!r} gives {len(tasks)} "
                         f"({names}, ...); choose one with dataset= and partition= (--dataset, --partition)")
    return tasks[0]


def post_hoc_method_names() -> list[str]:
    """Registered methods that need nothing but a trained classifier."""
    from bench.method import METHODS

    return [name for name in METHODS.names() if MethodSpec(name).requires() == ("classifier",)]


def evaluate(model: nn.Module, protocol: str, methods: Sequence[str] | str | None = None, *,
             dataset: str | None = None, partition: str | None = None, normalize=None, seed: int = 0,
             train_limit: int | None = None, test_limit: int | None = None, data_root: str | None = None,
             device: str | torch.device | None = None):
    """Fit and score post-hoc `methods` (default: all of them) on `model`; one DataFrame row per method and OOD set.

    Statistics are fitted on the task's ID training images (at most `train_limit`, a seeded
    subset); the ID and OOD test sets are scored whole unless `test_limit` is given.
    """
    import pandas as pd

    from bench.runner import Settings, check_data, load_ref, load_validation, score_task, seed_everything

    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and not (isinstance(limit, int) and limit >= 1):
            raise BenchError(f"{name} must be an integer >= 1, or None for the whole set (got {limit!r})")
    task = single_task(protocol, dataset, partition)
    text = methods if isinstance(methods, str) else ",".join(methods or post_hoc_method_names())
    specs = parse_methods(text)
    for spec in specs:
        extra = [kind for kind in spec.requires() if kind != "classifier"]
        if extra:
            raise BenchError(f"method {spec.label} also needs {', '.join(extra)}, which evaluating a given model "
                             "does not train; use `bench run` for it")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = Settings(out="", data_root=data_root, gpus_per_trial=1.0 if device.type == "cuda" else 0.0)
    check_data([task], settings)
    train = load_ref(task.id_train, settings, train_limit, seed)
    classifier = as_feature_classifier(model, to_float(train.images[:2]).to(device), task.num_classes, normalize)
    rows = []
    for spec in specs:
        generator = seed_everything(seed)
        method = spec.build()
        start = time.perf_counter()
        method.fit(FitContext(task, train, {"classifier": classifier}, None, seed, device, generator,
                              validation=load_validation(task, settings, test_limit, seed)))
        fit_seconds = time.perf_counter() - start
        scores = score_task(method, task, settings, test_limit, seed)
        log.info("%s on %s: AUROC %.4f", spec.label, task.name, scores.metrics["auroc"])
        for ood_set, metrics in scores.ood_sets.items():
            rows.append({"method": spec.label, "ood_set": ood_set, **metrics, "accuracy": scores.metrics["accuracy"],
                         "fit_s": fit_seconds, "score_s": scores.seconds})
    return pd.DataFrame(rows)


def load_checkpoint(path: str | Path, arch: str, task, width: int | None = None) -> nn.Module:
    """A classifier for `task` built from a known architecture and a state dict saved with torch.save.

    `arch` is a bench backbone (the checkpoint is a `bench.nets.backbones.Classifier` state dict, as in
    the model cache) or `torchvision.<name>`, built with num_classes = the task's classes.
    """
    from bench.nets.backbones import BACKBONES, Classifier, build_backbone

    path = Path(path)
    if width is not None and not (isinstance(width, int) and width >= 1):
        raise BenchError(f"width must be an integer >= 1, or None for the backbone's own (got {width!r})")
    if not path.is_file():
        raise BenchError(f"checkpoint {path} does not exist")
    if arch.startswith("torchvision."):
        import torchvision

        builder = getattr(torchvision.models, arch.removeprefix("torchvision."), None)
        if not callable(builder):
            raise BenchError(f"torchvision has no model {arch.removeprefix('torchvision.')!r}")
        model = builder(num_classes=task.num_classes)
    else:
        channels, size, _ = task.image_shape
        BACKBONES.get(arch)  # an unknown name gets the registry's one-line error
        model = Classifier(build_backbone(arch, channels, size, width), task.num_classes)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise BenchError(f"cannot read checkpoint {path}: {type(err).__name__}; save it with "
                         "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
        state = state.get("state_dict", state.get("model"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"checkpoint {path} is not a state dict; save it with torch.save(model.state_dict(), path)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise BenchError(f"checkpoint {path} does not fit {arch} with {task.num_classes} classes: {detail}") from None
    return model.eval()
