"""Tiny ImageNet (200 classes, 64x64 RGB) from the standard `tiny-imagenet-200` folder.

Decoding its 110k JPEGs takes minutes, so each split is decoded once and cached beside the
images as `<folder>/bench-cache-<split>-<preprocess key>.npz` (bench.preprocess).
"""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageFiles, register_dataset
from bench.datasets._common import missing
from bench.errors import BenchError

FOLDER = "tiny-imagenet-200"
SIZE = 64
HOW_TO_OBTAIN = (
    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it in <root> "
    "so that <root>/tiny-imagenet-200/wnids.txt, train/ and val/ exist"
)


def _listing(folder: Path, split: str, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """Image paths and class indices (position of the wnid in sorted order) for one split."""
    index = {wnid: i for i, wnid in enumerate(sorted(wnids))}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in sorted(wnids):
            images = folder / "train" / wnid / "images"
            if not images.is_dir():
                raise missing(f"tinyimagenet train images of class {wnid}", images, HOW_TO_OBTAIN)
            files = sorted(p for p in images.iterdir() if p.suffix.lower() == ".jpeg")
            paths += files
            labels += [index[wnid]] * len(files)
    else:
        annotations = folder / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise missing("tinyimagenet val/val_annotations.txt", folder / "val", HOW_TO_OBTAIN)
        for line in annotations.read_text().splitlines():
            if not line.strip():
                continue
            file, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise BenchError(f"{annotations} names class {wnid!r} that is not in {folder / 'wnids.txt'}")
            paths.append(folder / "val" / "images" / file)
            labels.append(index[wnid])
    return paths, labels


def _load(root: Path, split: str) -> ImageFiles:
    folder = root / FOLDER
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise missing("tinyimagenet (tiny-imagenet-200/wnids.txt)", folder, HOW_TO_OBTAIN)
    paths, labels = _listing(folder, split, wnids_file.read_text().split())
    return ImageFiles(paths, labels, (3, SIZE, SIZE), cache=folder / f"bench-cache-{split}")


register_dataset(
    DatasetSource(
        name="tinyimagenet",
        num_classes=200,
        image_shape=(3, SIZE, SIZE),
        splits=("train", "val"),
        load=_load,
        how_to_obtain=HOW_TO_OBTAIN,
        locations=lambda root: (root / FOLDER,),
        description="Tiny ImageNet, 64x64 RGB, 200 classes (100000 train / 10000 val)",
        train_augment=True,
    )
)
