"""Tiny ImageNet (200 classes, 64x64 RGB) from the standard `tiny-imagenet-200` folder.

Decoding its 110k JPEGs takes minutes, so each split is decoded once and cached as
`<folder>/bench-cache-<split>.npz` (uncompressed, loads in about a second).
"""
from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import missing, one_line, to_imageset
from bench.errors import BenchError

logger = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
SIZE = 64
HOW_TO_OBTAIN = (
    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it in <root> "
    "so that <root>/tiny-imagenet-200/wnids.txt, train/ and val/ exist"
)


def _decode(path: Path) -> np.ndarray:
    """One JPEG as (H, W, 3) uint8; a few Tiny ImageNet images are greyscale, hence convert."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


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


def _decode_all(paths: list[Path]) -> np.ndarray:
    """Decode into one (N, 3, 64, 64) array; Pillow releases the GIL while decoding, so threads help."""
    images = np.empty((len(paths), SIZE, SIZE, 3), dtype=np.uint8)

    def decode_into(i: int) -> None:
        try:
            pixels = _decode(paths[i])
        except OSError as error:
            raise BenchError(one_line(f"cannot decode {paths[i]}: {error}; obtain the dataset again")) from error
        if pixels.shape != (SIZE, SIZE, 3):
            raise BenchError(f"{paths[i]} is {pixels.shape[1]}x{pixels.shape[0]}, expected {SIZE}x{SIZE}")
        images[i] = pixels

    logger.info("decoding %d Tiny ImageNet JPEGs (cached afterwards)", len(paths))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(decode_into, range(len(paths))))
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _read_cache(path: Path, wnids: list[str], count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable, or made from different files."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            images, labels, cached_wnids = cache["images"], cache["labels"], cache["wnids"]
    except Exception as error:  # a truncated or garbled cache is just a cache miss
        logger.warning("ignoring unreadable cache %s (%s); decoding again", path, one_line(error))
        return None
    if list(cached_wnids) != sorted(wnids) or images.shape != (count, 3, SIZE, SIZE) or labels.shape != (count,):
        logger.warning("cache %s does not match the files on disk; decoding again", path)
        return None
    return images, labels


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, wnids: list[str]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written cache."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        logger.warning("cannot cache decoded images in %s (%s); decoding again next time", path.parent, error)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, wnids=np.array(sorted(wnids)))
        os.replace(temp, path)
    except OSError as error:
        logger.warning("cannot write cache %s (%s)", path, error)
        Path(temp).unlink(missing_ok=True)


def _load(root: Path, split: str) -> ImageSet:
    folder = root / FOLDER
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise missing("tinyimagenet (tiny-imagenet-200/wnids.txt)", folder, HOW_TO_OBTAIN)
    wnids = wnids_file.read_text().split()
    paths, labels = _listing(folder, split, wnids)
    cache = folder / f"bench-cache-{split}.npz"
    cached = _read_cache(cache, wnids, len(paths))
    if cached is not None:
        logger.debug("tinyimagenet %s from cache %s", split, cache)
        return to_imageset(*cached)
    images = _decode_all(paths)
    label_array = np.asarray(labels, dtype=np.int64)
    _write_cache(cache, images, label_array, wnids)
    return to_imageset(images, label_array)


register_dataset(
    DatasetSource(
        name="tinyimagenet",
        num_classes=200,
        image_shape=(3, SIZE, SIZE),
        splits=("train", "val"),
        load=_load,
        how_to_obtain=HOW_TO_OBTAIN,
        description="Tiny ImageNet, 64x64 RGB, 200 classes (100000 train / 10000 val)",
        train_augment=True,
    )
)
