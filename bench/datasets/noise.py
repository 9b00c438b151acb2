"""Synthetic far-OOD sets: Gaussian and uniform noise images, 28x28 grey, generated from fixed seeds.

As defined by ODIN (Liang et al., 2018): 10,000 images whose pixels are i.i.d. N(0.5, 1)
clipped to [0, 1], or i.i.d. U[0, 1]; quantised to uint8 like every other set. The seed is
fixed, so every run and every machine sees the same images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import to_imageset

COUNT = 10_000
SHAPE = (1, 28, 28)


def _gaussian(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(0.5, 1.0, (COUNT, *SHAPE)), 0, 1)


def _uniform(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, (COUNT, *SHAPE))


def _source(name: str, draw, seed: int, description: str) -> DatasetSource:
    def load(_root: Path, _split: str) -> ImageSet:
        pixels = draw(np.random.default_rng(seed))
        return to_imageset(np.round(pixels * 255), np.full(COUNT, -1))

    return DatasetSource(
        name=name, num_classes=0, image_shape=SHAPE, splits=("test",), load=load,
        how_to_obtain="nothing to obtain: generated on the fly", locations=lambda _root: (),
        description=description,
    )


register_dataset(_source("noise_gaussian", _gaussian, 0, "10,000 images of i.i.d. N(0.5, 1) pixels clipped to [0, 1], 28x28 grey"))
register_dataset(_source("noise_uniform", _uniform, 1, "10,000 images of i.i.d. U[0, 1] pixels, 28x28 grey"))
