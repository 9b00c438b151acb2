"""Shared pieces of the dataset modules: the one-line "missing" error, guarded downloads, file readers."""
from __future__ import annotations

import ast
import contextlib
import importlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.data import ImageFiles, ImageSet
from bench.errors import BenchError

logger = logging.getLogger(__name__)

# Applies per socket operation (connect, each read), so a slow but live download still
# finishes while an unreachable host fails within this many seconds.
DOWNLOAD_TIMEOUT_S = 10.0


def one_line(text: str) -> str:
    """Collapse whitespace so a message (or a wrapped exception's text) fits on one line."""
    return " ".join(str(text).split())


def missing(what: str, folder: Path, how_to_obtain: str, reason: str = "") -> BenchError:
    """The error for an absent dataset: what is missing, the folder expected, how to get it."""
    because = f" ({reason})" if reason else ""
    return BenchError(one_line(f"{what} not found: expected it in {folder}{because}; {how_to_obtain}"))


def download_allowed() -> bool:
    """Downloads are on unless BENCH_DOWNLOAD=0 (e.g. offline machines, tests)."""
    return os.environ.get("BENCH_DOWNLOAD", "1").strip() != "0"


@contextlib.contextmanager
def downloads_off() -> Iterator[None]:
    """Turn downloads off for a while, e.g. while `bench data` only looks at what is there."""
    previous = os.environ.get("BENCH_DOWNLOAD")
    os.environ["BENCH_DOWNLOAD"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["BENCH_DOWNLOAD"]
        else:
            os.environ["BENCH_DOWNLOAD"] = previous


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens URLs without a timeout; bound them through the socket default."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def torchvision_dataset(cls_name: str, tv_root: Path, what: str, expected: Path, how_to_obtain: str, **kwargs: Any):
    """Build `torchvision.datasets.<cls_name>` from local files, downloading them if allowed.

    Every failure (files absent, download refused or failed) becomes one BenchError line.
    """
    cls = getattr(importlib.import_module("torchvision.datasets"), cls_name)
    try:
        return cls(str(tv_root), download=False, **kwargs)
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        logger.debug("%s: local files unusable: %s", what, error)
    if not download_allowed():
        raise missing(what, expected, how_to_obtain, "downloads are off because BENCH_DOWNLOAD=0")
    logger.info("%s: downloading into %s", what, tv_root)
    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            return cls(str(tv_root), download=True, **kwargs)
    except Exception as error:  # any network, archive or checksum failure is the same user problem
        logger.debug("%s: download failed", what, exc_info=True)
        raise missing(what, expected, how_to_obtain, f"download failed: {error}") from error


def to_imageset(images: np.ndarray, labels: Any, channels_last: bool = False) -> ImageSet:
    """uint8 images (N,H,W), (N,H,W,C) with channels_last, or (N,C,H,W) into an ImageSet."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[:, None]
    elif channels_last:
        images = images.transpose(0, 3, 1, 2)
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.as_tensor(np.asarray(labels), dtype=torch.int64),
    )


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_folder(folder: Path, what: str, how_to_obtain: str, shape: tuple[int, int, int] | None) -> ImageFiles:
    """Every image file under `folder` (any depth, sorted by path), unlabelled (-1)."""
    if not folder.is_dir():
        raise missing(what, folder, how_to_obtain)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise missing(what, folder, how_to_obtain, "the folder holds no image files")
    return ImageFiles(paths, [-1] * len(paths), shape, cache=folder / "bench-cache")


def image_list(list_file: Path, images: Path, label_key: str, what: str, how_to_obtain: str) -> ImageFiles:
    """An image list: one `<path relative to images> <python dict>` (or `<path> <int>`) per line."""
    if not list_file.is_file():
        raise missing(what, list_file.parent, how_to_obtain, f"no {list_file.name}")
    paths, labels = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, extra = line.strip().partition(" ")
        try:
            fields = ast.literal_eval(extra.strip())
            label = int(fields[label_key]) if isinstance(fields, dict) else int(fields)
        except (ValueError, SyntaxError, KeyError, TypeError) as error:
            raise BenchError(one_line(f"{list_file} line {number}: cannot read a {label_key!r} from {extra!r} ({error})"))
        paths.append(images / name)
        labels.append(label)
    absent = next((p for p in paths if not p.is_file()), None)
    if absent is not None:
        raise missing(f"{what} (image {absent.name} listed in {list_file.name})", absent.parent, how_to_obtain)
    return ImageFiles(paths, labels, None, cache=list_file.with_name(f"bench-cache-{list_file.stem}"))
