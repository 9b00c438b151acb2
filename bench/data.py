"""The data layer: named datasets, held in memory as uint8 tensors.

A dataset is registered by a module in `bench/datasets/` as a `DatasetSource`. Loading
returns an `ImageSet`; protocols pick classes from it with `ImageSet.select`. Small
datasets fit in memory (and on the GPU), so training never decodes images per step.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.errors import BenchError
from bench.registry import Registry

DEFAULT_DATA_ROOT = Path("~/.cache/bench/data")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The root folder datasets are read from: --data-root, then $BENCH_DATA, then a default."""
    root = explicit or os.environ.get("BENCH_DATA") or DEFAULT_DATA_ROOT
    return Path(root).expanduser()


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W) and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, classes: Sequence[int] | None) -> "ImageSet":
        """Keep only `classes`, relabelled 0..len(classes)-1 in the order given."""
        if classes is None:
            return self
        if len(self) == 0:
            return self
        size = max(int(self.labels.max()), *classes) + 1
        lookup = torch.full((size,), -1, dtype=torch.long)
        lookup[torch.as_tensor(list(classes), dtype=torch.long)] = torch.arange(len(classes))
        mapped = lookup[self.labels]
        keep = mapped >= 0
        return ImageSet(self.images[keep], mapped[keep])

    def subset(self, limit: int | None, seed: int = 0) -> "ImageSet":
        """A seeded random subset of at most `limit` images (all of them when limit is None)."""
        if limit is None or limit >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        return ImageSet(self.images[order], self.labels[order])


@dataclass(frozen=True)
class DatasetSource:
    """How to find and read one dataset.

    `load(root, split)` returns an ImageSet or raises BenchError naming what is missing.
    `how_to_obtain` is shown in that error and by `bench list datasets`. `train_augment`
    turns on random crop + flip for classifiers trained on it (natural images, not digits).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    splits: tuple[str, ...]
    load: Callable[[Path, str], ImageSet]
    how_to_obtain: str
    description: str = ""
    train_augment: bool = False


DATASETS: Registry[DatasetSource] = Registry("dataset", discover="bench.datasets")


def register_dataset(source: DatasetSource) -> DatasetSource:
    return DATASETS.register(source.name, source)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str, split: str) -> ImageSet:
    return DATASETS.get(name).load(Path(root), split)


def load_split(name: str, split: str, root: str | os.PathLike | None = None) -> ImageSet:
    """Load one split of a registered dataset (memoised per process)."""
    source = DATASETS.get(name)
    if split not in source.splits:
        raise BenchError(f"dataset {name!r} has no split {split!r}; it has {', '.join(source.splits)}")
    return _load_cached(name, str(data_root(root)), split)
