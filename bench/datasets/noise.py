"""Synthetic far-OOD sets: noise images, 28x28 grey, generated from fixed seeds.

Test sets, as defined by ODIN (Liang et al., 2018): 10,000 images whose pixels are i.i.d.
N(0.5, 1) clipped to [0, 1], or i.i.d. U[0, 1]. Validation sets of 2,000 images each
(`bench.protocol.VALIDATION_OOD`, tested on by no protocol), as defined by Outlier Exposure
(Hendrycks et al., 2019): Rademacher noise (each pixel 0 or 1 with probability 1/2) and Blobs
(Bernoulli(0.7) pixels smoothed by a Gaussian of sigma 1, values below 0.75 set to 0: amorphous
shapes with sharp edges). All are quantised to uint8 like every other set. The seeds are fixed,
so every run and every machine sees the same images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import to_imageset

COUNT = 10_000
VALIDATION_COUNT = 2_000  # enough to rank configurations; a sweep scores them once per candidate
SHAPE = (1, 28, 28)


def _gaussian(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(0.5, 1.0, (COUNT, *SHAPE)), 0, 1)


def _uniform(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, (COUNT, *SHAPE))


def _rademacher(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2, (VALIDATION_COUNT, *SHAPE)).astype(float)


def _blobs(rng: np.random.Generator) -> np.ndarray:
    pixels = gaussian_filter(rng.binomial(1, 0.7, (VALIDATION_COUNT, *SHAPE)).astype(float), sigma=(0, 0, 1, 1))
    pixels[pixels < 0.75] = 0.0
    return pixels


def _source(name: str, draw, seed: int, description: str) -> DatasetSource:
    def load(_root: Path, _split: str) -> ImageSet:
        pixels = draw(np.random.default_rng(seed))
        return to_imageset(np.round(pixels * 255), np.full(len(pixels), -1))

    return DatasetSource(
        name=name, num_classes=0, image_shape=SHAPE, splits=("test",), load=load,
        how_to_obtain="nothing to obtain: generated on the fly", locations=lambda _root: (),
        description=description,
    )


register_dataset(_source("noise_gaussian", _gaussian, 0, "10,000 images of i.i.d. N(0.5, 1) pixels clipped to [0, 1], 28x28 grey"))
register_dataset(_source("noise_uniform", _uniform, 1, "10,000 images of i.i.d. U[0, 1] pixels, 28x28 grey"))
register_dataset(_source("noise_rademacher", _rademacher, 2,
                         "2,000 images of pixels 0 or 1 with probability 1/2, 28x28 grey (validation OOD)"))
register_dataset(_source("noise_blobs", _blobs, 3, "2,000 images of Bernoulli(0.7) pixels smoothed by a Gaussian "
                         "(sigma 1), below 0.75 set to 0, 28x28 grey (validation OOD)"))
