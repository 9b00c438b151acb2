"""SVHN street-view house numbers (cropped digits), from torchvision's .mat files in `<root>/svhn/`."""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import to_imageset, torchvision_dataset

HOW_TO_OBTAIN = (
    "let torchvision download it (needs internet; BENCH_DOWNLOAD must not be 0), or download "
    "http://ufldl.stanford.edu/housenumbers/train_32x32.mat and test_32x32.mat into <root>/svhn/"
)


def _load(root: Path, split: str) -> ImageSet:
    folder = root / "svhn"
    data = torchvision_dataset("SVHN", folder, f"svhn {split} split", folder, HOW_TO_OBTAIN, split=split)
    # torchvision already maps label 10 to digit 0 and stores images as (N, C, H, W).
    return to_imageset(data.data, data.labels)


register_dataset(
    DatasetSource(
        name="svhn",
        num_classes=10,
        image_shape=(3, 32, 32),
        splits=("train", "test"),
        load=_load,
        how_to_obtain=HOW_TO_OBTAIN,
        locations=lambda root: (root / "svhn",),
        description="SVHN cropped house-number digits, 32x32 RGB (73257 train / 26032 test)",
    )
)
