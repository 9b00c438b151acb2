"""The one place images change shape: resize, centre crop, channel conversion, file decoding.

A `Preprocess` is part of a `DataRef` (so it enters trial ids and cache keys through
`describe()`); the data layer applies it to in-memory sets and to image files alike, so a
set of 8x8 digits, a folder of JPEGs and a list of SC-OOD images all reach a method in the
ID data's shape.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError

logger = logging.getLogger(__name__)

_MODES = {1: "L", 3: "RGB"}


@dataclass(frozen=True)
class Preprocess:
    """Shorter side to `resize`, centre crop `crop` x `crop`, then `size` x `size`; `channels` 1 or 3.

    Bilinear throughout (SC-OOD's test transform; the FIX sets' Resize(256), CenterCrop(256),
    Resize(32) is `Preprocess(32, 3, resize=256, crop=256)`). An image that already has the
    output size is left as it is, so released sets built this way (ODIN's and CSI's 32x32
    folders, CIFAR in SC-OOD's lists) are not resampled a second time.
    """

    size: int
    channels: int
    resize: int | None = None  # default: size
    crop: int | None = None  # default: resize

    def __post_init__(self):
        if self.channels not in _MODES:
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @classmethod
    def to_shape(cls, shape: Sequence[int]) -> "Preprocess":
        """Fit any image to a (C, H, H) shape: resize the shorter side, centre crop, convert channels."""
        channels, height, width = shape
        if height != width:
            raise ValueError(f"only square targets are supported, got {tuple(shape)}")
        return cls(height, channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def describe(self) -> dict:
        return asdict(self)

    def image(self, image: Image.Image) -> np.ndarray:
        """One PIL image to a (C, size, size) uint8 array."""
        image = image.convert(_MODES[self.channels])
        if image.size != (self.size, self.size):
            resize = self.resize or self.size
            crop = self.crop or resize
            width, height = image.size
            scale = resize / min(width, height)
            image = image.resize((max(resize, round(width * scale)), max(resize, round(height * scale))),
                                 Image.BILINEAR)
            left = int(round((image.size[0] - crop) / 2.0))
            top = int(round((image.size[1] - crop) / 2.0))
            image = image.crop((left, top, left + crop, top + crop))
            if crop != self.size:
                image = image.resize((self.size, self.size), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to the output shape; a no-op when the shape already matches."""
        if tuple(images.shape[1:]) == self.shape:
            return images
        arrays = images.numpy()
        out = np.empty((len(arrays), *self.shape), dtype=np.uint8)
        for i, pixels in enumerate(arrays):
            out[i] = self.image(Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)))
        return torch.from_numpy(out)


def _listing_hash(paths: Sequence[Path], labels: Sequence[int], base: Path) -> str:
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        digest.update(f"{os.path.relpath(path, base)}\t{label}\n".encode())
    return digest.hexdigest()[:24]


def _read_cache(path: Path, listing: str, count: int, shape: tuple) -> np.ndarray | None:
    """The cached images, or None when absent, unreadable, or made from other files."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            images, cached_listing = cache["images"], str(cache["listing"])
    except Exception as error:  # a truncated or garbled cache is just a cache miss
        logger.warning("ignoring unreadable cache %s (%s); decoding again", path, " ".join(str(error).split()))
        return None
    if cached_listing != listing or images.shape != (count, *shape):
        logger.warning("cache %s does not match the files on disk; decoding again", path)
        return None
    return images


def _write_cache(path: Path, images: np.ndarray, listing: str) -> None:
    """Write atomically (temp file + rename); an unwritable folder only costs a decode next time."""
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        logger.warning("cannot cache decoded images in %s (%s); decoding again next time", path.parent, error)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, listing=np.array(listing))
        os.replace(temp, path)
    except OSError as error:
        logger.warning("cannot write cache %s (%s)", path, error)
        Path(temp).unlink(missing_ok=True)


def decode(path: Path, preprocess: Preprocess) -> np.ndarray:
    """Decode one image file into the preprocess's shape."""
    try:
        with Image.open(path) as image:
            return preprocess.image(image)
    except OSError as error:
        raise BenchError(" ".join(f"cannot decode {path}: {error}; obtain the dataset again".split())) from error


def decode_files(paths: Sequence[Path], labels: Sequence[int], preprocess: Preprocess, cache: Path | None) -> np.ndarray:
    """Decode image files to one (N, C, H, W) array, cached as `<cache>-<preprocess key>.npz`.

    Decoding tens of thousands of JPEGs takes minutes; the cache loads in about a second and is
    rebuilt when the listed files or the preprocessing change.
    """
    key = hashlib.sha256(repr(preprocess.describe()).encode()).hexdigest()[:8]
    cache_file = cache.with_name(f"{cache.name}-{key}.npz") if cache else None
    listing = _listing_hash(paths, labels, cache.parent if cache else Path("/"))
    if cache_file:
        cached = _read_cache(cache_file, listing, len(paths), preprocess.shape)
        if cached is not None:
            logger.debug("decoded images from cache %s", cache_file)
            return cached
    images = np.empty((len(paths), *preprocess.shape), dtype=np.uint8)

    def decode_into(i: int) -> None:
        images[i] = decode(paths[i], preprocess)

    logger.info("decoding %d image files (cached afterwards)", len(paths))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow releases the GIL while decoding
        list(pool.map(decode_into, range(len(paths))))
    if cache_file:
        _write_cache(cache_file, images, listing)
    return images
