"""Shared pieces of the dataset modules: the one-line "missing" error and guarded downloads."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bench.data import ImageSet
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
