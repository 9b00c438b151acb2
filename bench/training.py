"""Minibatch loops over tensors already in memory (and on the device)."""
from __future__ import annotations

import logging
from typing import Callable, Iterator

import torch

log = logging.getLogger(__name__)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch; the last partial batch is kept."""
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)


def train_epochs(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    name: str = "model",
) -> torch.nn.Module:
    """Adam on `loss_fn(model, x, y)` for `epochs` passes; `transform` maps a uint8 batch to model input."""
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for index in shuffled_batches(len(inputs), batch_size, generator, inputs.device):
            x = inputs[index]
            if transform is not None:
                x = transform(x)
            loss = loss_fn(model, x, labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
            count += len(index)
        log.info("%s epoch %d/%d loss %.4f", name, epoch + 1, epochs, total / max(count, 1))
    return model.eval()


@torch.no_grad()
def map_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int = 1024,
                transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Apply `fn` batch by batch (no gradients) and concatenate the results."""
    outputs = []
    for chunk in inputs.split(batch_size):
        outputs.append(fn(transform(chunk) if transform is not None else chunk))
    return torch.cat(outputs)
