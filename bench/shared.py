"""Shared models: networks that several methods need, trained once and cached.

A training procedure is one module in `bench/shared_models/` that registers a
`SharedModel`: how to build the untrained network for a task, how to train it, and its
recipe part (the entry of its own per-scale table). Methods name the kinds they need in
`requires`; the runner trains each (kind, task data, recipe part, seed) once and hands the
result over. A procedure whose network meets `bench.nets.contract` (`network=True`) can be
scored by every post-hoc method (`energy[net=kind]`) and fine-tuned by CMG (`kind+cmg_e`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.protocol import Task
from bench.recipes import Recipe, describe_part
from bench.registry import Registry
from bench.store import code_hash, content_key
from bench.training import TrainInputs


@dataclass(frozen=True)
class SharedModel:
    kind: str
    description: str
    build: Callable[[Task, Recipe], torch.nn.Module]
    train: Callable[[torch.nn.Module, TrainInputs], torch.nn.Module]
    recipe_part: Callable[[Recipe], Any]
    requires: tuple[str, ...] = ()
    network: bool = False  # the trained module meets the network contract (forward_features, final_layer)
    aux: bool = False  # trains on the task's auxiliary outlier set (`Task.extra_train`, `TrainInputs.extra`)
    # For generative procedures: (trained model, task, count, torch.Generator) -> `count` images in [0, 1], (N, C, H, W),
    # of what it generates, for a user to look at (`bench samples`).
    samples: Callable[[torch.nn.Module, Task, int, torch.Generator], torch.Tensor] | None = None

    def code_version(self) -> str:
        """Hash of the code that trains this model (its module and what it imports), nothing else."""
        return code_hash(self.train.__module__, self.build.__module__)

    def key(self, task: Task, recipe: Recipe, seed: int, dependency_keys: dict[str, str]) -> str:
        """Everything that determines the weights: data, recipe part, seed, code and what it is built from."""
        return content_key({
            "kind": self.kind,
            "data": task.id_train.describe(),
            "num_classes": task.num_classes,
            "train_limit": recipe.train_limit,
            "recipe": describe_part(self.recipe_part(recipe)),
            "seed": seed,
            "code": self.code_version(),
            "dependencies": dependency_keys,
            **({"aux": task.extra_train.describe() if task.extra_train else None} if self.aux else {}),
        })


SHARED_MODELS: Registry[SharedModel] = Registry("shared model", discover="bench.shared_models")


def register_shared_model(model: SharedModel) -> SharedModel:
    return SHARED_MODELS.register(model.kind, model)


def model_closure(kinds) -> list[str]:
    """These shared models and every model they are built from, each once."""
    closure, pending = [], list(kinds)
    while pending:
        kind = pending.pop()
        if kind not in closure:
            closure.append(kind)
            pending.extend(SHARED_MODELS.get(kind).requires)
    return closure


def uses_aux(kinds) -> bool:
    """Whether any of these shared models, or one they are built from, trains on the auxiliary set."""
    return any(SHARED_MODELS.get(kind).aux for kind in model_closure(kinds))


def network_kinds() -> list[str]:
    """Shared models that can be scored and fine-tuned: their networks meet the contract."""
    return [kind for kind, model in SHARED_MODELS.items() if model.network]
