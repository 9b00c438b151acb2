"""Fashion-MNIST clothing images, from `<root>/FashionMNIST/raw/` or Debian's dataset package."""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._idx import load_idx_split

# Installed by `apt install dataset-fashion-mnist`; no download needed where it is present.
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")

HOW_TO_OBTAIN = (
    "run `apt install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist/), "
    "let torchvision download it (needs internet; BENCH_DOWNLOAD must not be 0), or copy the four "
    "*-idx?-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into <root>/FashionMNIST/raw/"
)


def _load(root: Path, split: str) -> ImageSet:
    return load_idx_split("fashion_mnist", root, split, "FashionMNIST", (DEBIAN_FOLDER,), HOW_TO_OBTAIN)


register_dataset(
    DatasetSource(
        name="fashion_mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        splits=("train", "test"),
        load=_load,
        how_to_obtain=HOW_TO_OBTAIN,
        locations=lambda root: (root / "FashionMNIST" / "raw", DEBIAN_FOLDER),
        description="Fashion-MNIST clothing articles, 28x28 grey (60000 train / 10000 test)",
    )
)
