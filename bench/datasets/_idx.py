"""MNIST-style datasets stored as IDX files (optionally gzipped), read without torchvision."""
from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data import ImageSet
from bench.datasets._common import missing, torchvision_dataset, to_imageset
from bench.errors import BenchError

logger = logging.getLogger(__name__)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file: two zero bytes, a type code, the rank, big-endian int32 dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = bytearray(f.read())  # writable, so torch.from_numpy shares it without a warning
    except (OSError, EOFError, zlib.error) as error:
        raise BenchError(f"cannot read {path}: {error}; delete it and obtain it again") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise BenchError(f"{path} is not an IDX file; delete it and obtain it again")
    rank = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=rank, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = 4 + 4 * rank
    if len(raw) - body != int(np.prod(shape)) * dtype.itemsize:
        raise BenchError(f"{path} is truncated (expected shape {shape}); delete it and obtain it again")
    return np.frombuffer(raw, dtype=dtype, offset=body).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    """The uncompressed file if present (faster), else the gzipped one."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_from(folder: Path, split: str) -> ImageSet | None:
    prefix = _PREFIX[split]
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        return None
    logger.debug("reading %s and %s", images_path, labels_path)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or len(images) != len(labels):
        raise BenchError(f"{images_path} and {labels_path} do not match; delete them and obtain them again")
    return to_imageset(images, labels)


def load_idx_split(
    name: str, root: Path, split: str, tv_class: str, extra_folders: Sequence[Path], how_to_obtain: str
) -> ImageSet:
    """Read `split` from `<root>/<tv_class>/raw/`, then `extra_folders`, else download via torchvision."""
    raw = root / tv_class / "raw"
    for folder in (raw, *extra_folders):
        found = _read_from(folder, split)
        if found is not None:
            return found
    what = f"{name} {split} split"
    torchvision_dataset(tv_class, root, what, raw, how_to_obtain, train=split == "train")
    found = _read_from(raw, split)
    if found is None:
        raise missing(what, raw, how_to_obtain, "the download left no IDX files there")
    return found
