"""Scoring a fitted method on a task's test sets: the code every trial's numbers pass through.

It loads each test set, asks the method for ID scores and labels batch by batch, and turns
them into metrics. Each set is scored inside the method's `scoring_split` context, in which
a post-hoc score reads its network's cached outputs on that set (`bench.features`) instead of
running the network. Trial ids hash this module (and what it imports) beside the method's.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench import progress
from bench.data import load_split
from bench.features import BATCH_SIZE
from bench.metrics import metrics_from_samples
from bench.protocol import DataRef, Task
from bench.training import to_float


def load_ref(ref: DataRef, settings, limit: int | None, seed: int):
    """The images of one data reference: the split, its classes and hold-out side, then a seeded subset of `limit`."""
    data = load_split(ref.dataset, ref.split, settings.data_root, ref.preprocess)
    return ref.select(data).subset(limit, seed)


def load_validation(task: Task, settings, limit: int | None, seed: int):
    """The task's ID validation images (a seeded subset of `limit`, as for test sets), or None without a split."""
    return load_ref(task.id_val, settings, limit, seed) if task.id_val else None


def _predict_all(method, images: torch.Tensor, device: torch.device, batch_size: int = BATCH_SIZE):
    """Scores and labels for all images, in batches; gradients are the method's business (ODIN needs them)."""
    scores, labels = [], []
    for chunk in progress.steps(images.split(batch_size), desc="scoring", unit="batch"):
        prediction = method.predict(to_float(chunk.to(device)))
        scores.append(prediction.score.float().cpu())
        labels.append(prediction.label.cpu())
    return torch.cat(scores).numpy(), torch.cat(labels).numpy()


def _predict_split(method, ref: DataRef, images: torch.Tensor, limit: int | None, seed: int, device: torch.device):
    """`_predict_all` on one test split (the subset `limit`, `seed` of `ref`), in the method's context for it."""
    context = getattr(method, "scoring_split", None)  # a Detector has one; a bare object with predict may not
    with context(ref, images, limit, seed, device) if context is not None else contextlib.nullcontext():
        return _predict_all(method, images, device)


@dataclass
class Scores:
    """A fitted method's results on one task's test sets."""

    metrics: dict  # averaged over the OOD sets, plus closed-set accuracy
    ood_sets: dict  # per OOD set: its metrics and size
    sizes: dict  # images per test set
    seconds: float
    samples: dict  # per test set ("id_test" and each OOD set): per-image score, label, target, is_ood


def score_task(method, task: Task, settings, limit: int | None, seed: int) -> Scores:
    """Score the ID test set and every OOD test set of `task` with a fitted method; the metrics are computed from
    the per-image results (`bench.metrics.metrics_from_samples`), which are kept so they can be stored."""
    device = settings.device()
    start = time.perf_counter()
    samples = {}
    for name, ref in {"id_test": task.id_test, **task.ood_tests}.items():
        data = load_ref(ref, settings, limit, seed)
        scores, predicted = _predict_split(method, ref, data.images, limit, seed, device)
        targets = data.labels.numpy()
        samples[name] = {"score": scores, "label": predicted, "target": targets,
                         "is_ood": np.zeros(len(targets), dtype=bool) if name == "id_test" else ref.ood_mask(targets)}
    seconds = time.perf_counter() - start
    summary, per_set = metrics_from_samples(samples)
    return Scores(summary, per_set, {name: len(sample["score"]) for name, sample in samples.items()}, seconds, samples)
