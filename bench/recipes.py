"""Recipes: what a run's scale fixes for one task, and the shared shape of a training stage.

A scale names a purpose:
- smoke: seconds on a CPU, for tests (subsets of the data, one or two epochs);
- small: a whole Fashion-MNIST Setting 1 run in minutes on 2 CPU cores;
- paper: the papers' backbones and schedules (SPEC.md sections 3-6), for GPUs.

`Recipe` holds only what every model and trial of a task shares: the scale, the image
family, the data limits and whether the dataset's classifier is trained with crop+flip.
Each training procedure (a file in `bench/shared_models/`) and each method with a training
stage of its own keeps its per-scale settings in a table in its own file and reads its
entry with `recipe.pick(TABLE)`; that entry, not the whole recipe, enters its cache key.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from bench.errors import BenchError

SCALES = ("smoke", "small", "paper")

# Data limits per scale: (ID training images, images per test set); None = all.
LIMITS = {"smoke": (2000, 600), "small": (None, None), "paper": (None, None)}


@dataclass(frozen=True)
class Stage:
    """How one network is trained by minibatch descent on the ID training set."""

    arch: str | None  # backbone name (bench.nets.backbones) or a procedure's own architecture name
    width: int | None  # channel width (None: the architecture's default)
    epochs: int
    batch_size: int
    lr: float
    augment: bool = False
    optimizer: str = "adam"  # adam | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 0  # linear warm-up of the learning rate
    cosine: bool = False  # cosine decay to 0 after the warm-up


@dataclass(frozen=True)
class Recipe:
    scale: str
    family: str  # "gray28" (28x28 grayscale) or "colour" (32x32 / 64x64 RGB)
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = False  # crop + flip for the classifier (the dataset's choice, e.g. CIFAR)

    def pick(self, table: Mapping) -> Any:
        """This recipe's entry of a per-procedure table keyed by (family, scale), or by scale alone."""
        for key in ((self.family, self.scale), self.scale):
            if key in table:
                return table[key]
        raise BenchError(f"no {self.scale} recipe for {self.family} images in this procedure's table")

    def describe(self) -> dict:
        return asdict(self)


def image_family(image_shape: tuple[int, int, int]) -> str:
    channels, height, _ = image_shape
    return "gray28" if channels == 1 and height <= 28 else "colour"


def recipe_for(scale: str, image_shape: tuple[int, int, int], augment: bool = False) -> Recipe:
    """The recipe for a dataset of `image_shape`; `augment` turns on crop+flip for the classifier."""
    if scale not in SCALES:
        raise BenchError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    train_limit, test_limit = LIMITS[scale]
    return Recipe(scale, image_family(image_shape), train_limit, test_limit, augment)


def describe_part(part: Any) -> Any:
    """A recipe part as plain data for keys and records (dataclasses become dicts, also inside dicts)."""
    if hasattr(part, "__dataclass_fields__"):
        return asdict(part)
    if isinstance(part, dict):
        return {key: describe_part(value) for key, value in part.items()}
    return part
