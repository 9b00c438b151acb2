"""CIFAR-10 and CIFAR-100 (fine labels), read through torchvision's python-pickle layout."""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import to_imageset, torchvision_dataset


def _source(name: str, tv_class: str, folder: str, url: str, num_classes: int, description: str) -> DatasetSource:
    how_to_obtain = (
        f"let torchvision download it (needs internet; BENCH_DOWNLOAD must not be 0), "
        f"or download {url} and extract it in <root> so that <root>/{folder}/ exists"
    )

    def load(root: Path, split: str) -> ImageSet:
        data = torchvision_dataset(
            tv_class, root, f"{name} {split} split", root / folder, how_to_obtain, train=split == "train"
        )
        return to_imageset(data.data, data.targets, channels_last=True)

    return DatasetSource(
        name=name,
        num_classes=num_classes,
        image_shape=(3, 32, 32),
        splits=("train", "test"),
        load=load,
        how_to_obtain=how_to_obtain,
        locations=lambda root: (root / folder,),
        description=description,
        train_augment=True,
    )


register_dataset(
    _source(
        "cifar10", "CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", 10,
        "CIFAR-10 natural images, 32x32 RGB, 10 classes (50000 train / 10000 test)",
    )
)
register_dataset(
    _source(
        "cifar100", "CIFAR100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", 100,
        "CIFAR-100 natural images, 32x32 RGB, 100 fine classes (50000 train / 10000 test)",
    )
)
