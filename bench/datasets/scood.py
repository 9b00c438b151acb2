"""The SC-OOD benchmark (Yang et al., ICCV 2021; used by MOODCAT): image lists over one image folder.

Layout, as released (scood_benchmark.zip, linked from github.com/Jingkang50/ICCV21_SCOOD):
`<root>/scood_benchmark/images/...` and
`<root>/scood_benchmark/imglist/benchmark_{cifar10,cifar100}/{train,test}_<name>.txt`, one
line per image: `<path under images/> <python dict>` with keys `label` (dataset level: -1
for every image of an OOD set) and `sc_label` (semantic: an OOD-set image showing an ID class
carries that class). As in the released code, training lists are read by `label` (so the
unlabelled TinyImageNet list `train_tin` stays unlabelled) and test lists by `sc_label`; a
protocol decides whether an OOD-set image with a class counts as ID (bench.protocol.DataRef).
Images vary in size: the protocol resizes them (SC-OOD: Resize(32), CenterCrop(32)).
"""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageFiles, register_dataset
from bench.datasets._common import image_list

FOLDER = "scood_benchmark"
HOW_TO_OBTAIN = (
    "download scood_benchmark.zip (linked from github.com/Jingkang50/ICCV21_SCOOD) and unzip it in <root> "
    "so that <root>/scood_benchmark/images/ and imglist/ exist"
)
TEST_SETS = ("svhn", "tin", "texture", "lsun", "places365")
LABEL_KEY = {"train": "label", "test": "sc_label"}  # by the list's stage, as the released code reads them


def _source(id_name: str, other_cifar: str, num_classes: int) -> DatasetSource:
    name = f"scood_{id_name}"
    lists = Path(FOLDER) / "imglist" / f"benchmark_{id_name}"
    splits = (f"train_{id_name}", "train_tin", f"test_{id_name}", f"test_{other_cifar}",
              *(f"test_{ood}" for ood in TEST_SETS))

    def load(root: Path, split: str) -> ImageFiles:
        stage = split.partition("_")[0]
        return image_list(root / lists / f"{split}.txt", root / FOLDER / "images", LABEL_KEY[stage],
                          f"{name} list {split}", HOW_TO_OBTAIN)

    return DatasetSource(
        name=name, num_classes=num_classes, image_shape=None, splits=splits, load=load,
        how_to_obtain=HOW_TO_OBTAIN, locations=lambda root: (root / lists, root / FOLDER / "images"),
        description=f"SC-OOD benchmark lists for ID {id_name}: its train/test lists, OOD test lists, "
                    "unlabelled TinyImageNet training list",
        train_augment=True,
    )


register_dataset(_source("cifar10", "cifar100", 10))
register_dataset(_source("cifar100", "cifar10", 100))
