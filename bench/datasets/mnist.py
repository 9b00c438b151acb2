"""MNIST handwritten digits, read from torchvision's `<root>/MNIST/raw/` IDX files."""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._idx import load_idx_split

HOW_TO_OBTAIN = (
    "let torchvision download it (needs internet; BENCH_DOWNLOAD must not be 0), or copy "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz from https://ossci-datasets.s3.amazonaws.com/mnist/ into <root>/MNIST/raw/"
)


def _load(root: Path, split: str) -> ImageSet:
    return load_idx_split("mnist", root, split, "MNIST", (), HOW_TO_OBTAIN)


register_dataset(
    DatasetSource(
        name="mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        splits=("train", "test"),
        load=_load,
        how_to_obtain=HOW_TO_OBTAIN,
        locations=lambda root: (root / "MNIST" / "raw",),
        description="MNIST handwritten digits, 28x28 grey (60000 train / 10000 test)",
    )
)
