"""Batched training augmentation that runs where the images already are (CPU or GPU)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop of the zero-padded image back to its size, then a horizontal flip with p=0.5.

    Offsets and flips are drawn independently per image of the (B, C, H, W) batch and applied
    with one gather, so no Python loop runs over the batch. The random draws are made on the
    generator's device (x's device when no generator is given), so a seeded CPU generator
    gives the same augmentation for images on any device.
    """
    b, c, h, w = x.shape
    rng_device = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=rng_device).to(x.device)
    flips = torch.randint(0, 2, (b,), generator=generator, device=rng_device).to(x.device, torch.bool)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = offsets[1, :, None] + torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def training_input(augment: bool):
    """uint8 batch -> float network input in [0, 1], with crop + flip when `augment` (the dataset's choice)."""
    from bench.training import to_float

    def transform(batch: torch.Tensor) -> torch.Tensor:
        images = to_float(batch)
        return random_crop_flip(images, padding=4) if augment else images

    return transform
