"""The data layer: named datasets, held in memory as uint8 tensors.

A dataset is registered by a module in `bench/datasets/` as a `DatasetSource`. Its reader
returns an `ImageSet` (arrays) or an `ImageFiles` listing (image folders and lists, decoded
on first use and cached); `load_split` brings either to the shape a protocol asks for
(`bench.preprocess`). Protocols pick classes with `ImageSet.select`. Small datasets fit in
memory (and on the GPU), so training never decodes images per step.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.errors import BenchError
from bench.preprocess import Preprocess, decode_files
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
        mapped = torch.where(self.labels >= 0, lookup[self.labels.clamp(min=0)], -1)  # -1: unlabelled image
        keep = mapped >= 0
        return ImageSet(self.images[keep], mapped[keep])

    def subset(self, limit: int | None, seed: int = 0) -> "ImageSet":
        """A seeded random subset of at most `limit` images (all of them when limit is None)."""
        if limit is None or limit >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:limit]
        return ImageSet(self.images[order], self.labels[order])

    def prepared(self, preprocess: Preprocess | None) -> "ImageSet":
        """These images in `preprocess`'s shape (unchanged without one)."""
        return ImageSet(preprocess.images(self.images), self.labels) if preprocess else self


@dataclass(frozen=True)
class ImageFiles:
    """Image files and their labels (-1: no class), listed by a reader but not yet decoded.

    `shape` is the images' own shape when they all share one (None when sizes vary, and
    then a protocol must give a Preprocess); `cache` is where decoded arrays may be kept.
    """

    paths: Sequence[Path]
    labels: Sequence[int]
    shape: tuple[int, int, int] | None
    cache: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def prepared(self, preprocess: Preprocess | None) -> ImageSet:
        """Decode (or read from the cache) in `preprocess`'s shape, else in the files' own shape."""
        if preprocess is None and self.shape is None:
            raise BenchError(f"images listed with {self.cache or 'this set'} vary in size; a protocol must resize them")
        preprocess = preprocess or Preprocess.to_shape(self.shape)
        images = decode_files(self.paths, self.labels, preprocess, self.cache)
        return ImageSet(torch.from_numpy(images), torch.as_tensor(list(self.labels), dtype=torch.int64))


@dataclass(frozen=True)
class DatasetSource:
    """How to find and read one dataset.

    `load(root, split)` returns an ImageSet or ImageFiles, or raises BenchError naming what
    is missing. `locations(root)` are the places it is looked for and `how_to_obtain` how to
    get it; both are shown by `bench data`. `image_shape` is None for sets whose images vary
    in size. `train_augment` turns on random crop + flip for classifiers trained on it
    (natural images, not digits).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int] | None
    splits: tuple[str, ...]
    load: Callable[[Path, str], "ImageSet | ImageFiles"]
    how_to_obtain: str
    locations: Callable[[Path], Sequence[Path]]
    description: str = ""
    train_augment: bool = False


DATASETS: Registry[DatasetSource] = Registry("dataset", discover="bench.datasets")


def register_dataset(source: DatasetSource) -> DatasetSource:
    return DATASETS.register(source.name, source)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, root: str, split: str, preprocess: Preprocess | None) -> ImageSet:
    return read_split(name, split, root).prepared(preprocess)


def read_split(name: str, split: str, root: str | os.PathLike | None = None) -> "ImageSet | ImageFiles":
    """What the dataset's reader returns, undecoded: enough to count images cheaply."""
    source = DATASETS.get(name)
    if split not in source.splits:
        raise BenchError(f"dataset {name!r} has no split {split!r}; it has {', '.join(source.splits)}")
    return source.load(data_root(root), split)


def load_split(name: str, split: str, root: str | os.PathLike | None = None,
               preprocess: Preprocess | None = None) -> ImageSet:
    """Load one split of a registered dataset, in `preprocess`'s shape if given (memoised per process)."""
    return _load_cached(name, str(data_root(root)), split, preprocess)
