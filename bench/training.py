"""How networks are trained: minibatch loops over tensors already in memory (and on the device).

Every training procedure (`bench/shared_models/`) trains through `train_epochs`, so the
loop, the optimiser and the learning-rate schedule are written once; a procedure supplies
its network, its loss and its `Stage` of the recipe.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from bench import progress
from bench.data import ImageSet
from bench.protocol import Task
from bench.recipes import Recipe

log = logging.getLogger(__name__)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float in [0, 1]: every network here sees unnormalised [0, 1] inputs."""
    return images.float().div_(255.0)


@dataclass
class TrainInputs:
    """What a shared model is trained from: ID training data only, plus the models it is built on."""

    task: Task
    train: ImageSet
    recipe: Recipe  # the run's scale; a procedure reads its own part with `recipe.pick(ITS_TABLE)`
    device: torch.device
    generator: torch.Generator
    dependencies: dict[str, torch.nn.Module]
    seed: int
    data_root: str | None = None  # where any other dataset a model trains on is read from
    extra: ImageSet | None = None  # the task's auxiliary outlier images (labels -1), for a procedure with `aux`

    def fit(self, model: torch.nn.Module, stage, loss_fn, transform, name: str) -> torch.nn.Module:
        """Train `model` on the ID training data with one `Stage` (epochs, batch, optimiser)."""
        return train_epochs(
            model,
            self.train.images.to(self.device),
            self.train.labels.to(self.device),
            loss_fn,
            stage=stage,
            generator=self.generator,
            transform=transform,
            name=f"{name}[{self.task.name}]",
        )


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch; the last partial batch is kept."""
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)


def make_optimizer(parameters, stage, steps_per_epoch: int):
    """The stage's optimiser and a per-step schedule: linear warm-up, then cosine decay or constant.

    `stage` has `lr`, `epochs` and optionally `optimizer` ("adam" or "sgd"), `weight_decay`,
    `momentum`, `warmup_epochs` and `cosine`.
    """
    name = getattr(stage, "optimizer", "adam")
    weight_decay = getattr(stage, "weight_decay", 0.0)
    if name == "sgd":
        optimiser = torch.optim.SGD(parameters, lr=stage.lr, momentum=getattr(stage, "momentum", 0.9),
                                    weight_decay=weight_decay)
    elif name == "adam":
        optimiser = torch.optim.Adam(parameters, lr=stage.lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose adam or sgd")
    warmup = getattr(stage, "warmup_epochs", 0) * steps_per_epoch
    total = max(1, stage.epochs * steps_per_epoch)
    cosine = getattr(stage, "cosine", False)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def train_epochs(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    stage,
    generator: torch.Generator,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    name: str = "model",
) -> torch.nn.Module:
    """Minimise `loss_fn(model, x, y)` over `stage.epochs` passes; `transform` maps a uint8 batch to model input.

    Only parameters that require gradients are optimised, so a procedure freezes a part of
    its network by switching its gradients off before calling this.
    """
    steps = math.ceil(len(inputs) / stage.batch_size)
    optimiser, schedule = make_optimizer([p for p in model.parameters() if p.requires_grad], stage, steps)
    model.train()
    for epoch in range(stage.epochs):
        total, count = 0.0, 0
        for index in progress.steps(shuffled_batches(len(inputs), stage.batch_size, generator, inputs.device), steps,
                                    f"{name} epoch {epoch + 1}/{stage.epochs}", "batch"):
            x = inputs[index]
            if transform is not None:
                x = transform(x)
            loss = loss_fn(model, x, labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        log.info("%s epoch %d/%d loss %.4f", name, epoch + 1, stage.epochs, total / max(count, 1))
    return model.eval()


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int = 1024,
                transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Apply `fn` batch by batch (no gradients) and concatenate the results."""
    outputs = []
    for chunk in inputs.split(batch_size):
        outputs.append(fn(transform(chunk) if transform is not None else chunk))
    return torch.cat(outputs)
