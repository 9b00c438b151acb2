"""An auxiliary outlier set that needs no download: patches cut from the photographs that
scikit-image and scikit-learn ship.

`natural_patches`: 10,000 unlabelled 32x32 RGB patches (labels -1), for methods that learn from
outliers (Outlier Exposure and its kin) on the offline protocols. Each patch is a square crop of
side 24-160 pixels (clipped to the photograph) at a uniform position of a uniformly drawn
photograph, flipped left-right with probability 1/2 and resized to 32x32 (PIL bilinear); grey
photographs are repeated over three channels. One fixed seed, so every machine makes the same
patches. Protocols bring them to the ID images' shape (28x28 grey for Fashion-MNIST).

The photographs: scikit-image's `astronaut`, `brick`, `camera`, `cat`, `cell`, `chelsea`,
`clock`, `coffee`, `coins`, `grass`, `gravel`, `hubble_deep_field`, `immunohistochemistry`,
`moon`, `page`, `retina`, `rocket`, `text`, and scikit-learn's `china.jpg` and `flower.jpg`
(`load_sample_images`). None of them is in any OOD test set here (scikit-image's LFW crops,
`lfw_subset`, are a different file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import to_imageset

COUNT = 10_000
SIDE = 32
CROP_SIDES = (24, 160)
SEED = 0
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")


def photographs() -> list[np.ndarray]:
    """The source photographs as uint8 (H, W, 3)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
    photos += list(load_sample_images().images)
    return [np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3] for photo in photos]


def cut_patches(photos: list[np.ndarray], count: int, seed: int) -> np.ndarray:
    """`count` seeded square patches, (count, 3, SIDE, SIDE) uint8."""
    rng = np.random.default_rng(seed)
    patches = np.empty((count, SIDE, SIDE, 3), dtype=np.uint8)
    for index in range(count):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        side = min(int(rng.integers(CROP_SIDES[0], CROP_SIDES[1] + 1)), height, width)
        top, left = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        patches[index] = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((SIDE, SIDE), Image.BILINEAR))
    return patches.transpose(0, 3, 1, 2)


def _load(_root: Path, _split: str) -> ImageSet:
    return to_imageset(cut_patches(photographs(), COUNT, SEED), np.full(COUNT, -1))


register_dataset(DatasetSource(
    name="natural_patches", num_classes=0, image_shape=(3, SIDE, SIDE), splits=("train",), load=_load,
    how_to_obtain="nothing to obtain: cut from photographs shipped with scikit-image and scikit-learn",
    locations=lambda _root: (), description=f"{COUNT:,} unlabelled 32x32 patches of the photographs shipped with "
    "scikit-image and scikit-learn (auxiliary outliers)",
))
