"""Shared models: networks that several methods need, trained once and cached.

A module in `bench/shared_models/` registers a `SharedModel`: how to build the untrained
network for a task and how to train it. Methods name the kinds they need in `requires`;
the runner trains each (kind, task data, recipe, seed) once and hands the result over.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from bench.data import ImageSet
from bench.protocol import Task
from bench.recipes import Recipe
from bench.registry import Registry
from bench.store import content_key, source_hash
from bench.training import train_epochs


@dataclass
class TrainInputs:
    """What a shared model is trained from: ID training data only."""

    task: Task
    train: ImageSet
    recipe: Recipe
    device: torch.device
    generator: torch.Generator
    dependencies: dict[str, torch.nn.Module]
    seed: int
    data_root: str | None = None  # where any other dataset a model trains on is read from

    def fit(self, model: torch.nn.Module, stage, loss_fn, transform, name: str) -> torch.nn.Module:
        """Train `model` on the ID training data with one stage of the recipe (epochs, batch, lr)."""
        return train_epochs(
            model,
            self.train.images.to(self.device),
            self.train.labels.to(self.device),
            loss_fn,
            epochs=stage.epochs,
            batch_size=stage.batch_size,
            lr=stage.lr,
            generator=self.generator,
            transform=transform,
            name=f"{name}[{self.task.name}]",
        )


@dataclass(frozen=True)
class SharedModel:
    kind: str
    description: str
    build: Callable[[Task, Recipe], torch.nn.Module]
    train: Callable[[torch.nn.Module, TrainInputs], torch.nn.Module]
    recipe_part: Callable[[Recipe], Any]
    code: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()

    def code_version(self) -> str:
        """Hash of the source that defines this model, so edited code never reuses old weights."""
        return source_hash(inspect.getmodule(self.train).__name__, *self.code)

    def key(self, task: Task, recipe: Recipe, seed: int, dependency_keys: dict[str, str]) -> str:
        part = self.recipe_part(recipe)
        return content_key({
            "kind": self.kind,
            "data": task.id_train.describe(),
            "num_classes": task.num_classes,
            "train_limit": recipe.train_limit,
            "recipe": asdict(part) if hasattr(part, "__dataclass_fields__") else part,
            "seed": seed,
            "code": self.code_version(),
            "dependencies": dependency_keys,
        })


SHARED_MODELS: Registry[SharedModel] = Registry("shared model", discover="bench.shared_models")


def register_shared_model(model: SharedModel) -> SharedModel:
    return SHARED_MODELS.register(model.kind, model)
