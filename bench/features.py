"""A trained network's outputs on a data split, computed once and kept in the model cache.

Every post-hoc score reads a network through `forward_features(x) -> (logits, penultimate)`
(`bench.nets.contract`). `network_outputs` runs that forward pass over a set of images, and
`FeatureCache` keeps its result per (network, data split) next to the trained models:

    <cache>/features/<kind>/<network key>/<split key>.pt

so K post-hoc methods on one network cost one forward pass per split instead of K. The split
key covers what can change the outputs beside the weights (which the network key covers): the
data reference's description, the subset's limit and seed, the dtype of the network's
parameters and the code of this module (the forward pass and its batching). Not the device:
outputs computed on a GPU are read on a CPU too, like the trained weights themselves, and differ
from the CPU's own at float rounding. Each file also holds a fingerprint of the images it was
computed from; a file that does not load, or whose fingerprint, count or shapes do not match,
is recomputed with a warning.

On one device, scores read from cached outputs are bit-identical to scores of the network run
afresh: the outputs are computed in the batches of `BATCH_SIZE` that scoring feeds methods, and
each batch is scored from a tensor of its own (`tests/test_feature_cache.py` checks every
post-hoc score). A file takes (logits + penultimate) x 4 bytes per image: about 91 MB for
Fashion-MNIST's 6-class partitions (36,000 + 10,000 images, 512 features); delete `features/`
at any time to reclaim the space.

Files are written whole (locally: a temporary name, then a rename) under the split's lock in the
cache (`Storage.lock`), so concurrent runs on a local cache compute each split's outputs once; a
cache at a URL has no locks (`bench.store`): two runs may then both compute a split, and either
whole file is good. `BENCH_FEATURE_CACHE=0` turns the cache off (every method runs the network
itself, as before), for timing comparisons.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from pathlib import Path

import torch

from bench.protocol import DataRef
from bench.store import ModelCache, code_hash, content_key, write_atomic
from bench.training import to_float

log = logging.getLogger(__name__)

BATCH_SIZE = 1000  # scoring (`bench.scoring`) feeds methods batches of the same size


@torch.no_grad()
def network_outputs(network, images: torch.Tensor, device, batch_size: int = BATCH_SIZE):
    """(logits, penultimate) of uint8 `images`, batch by batch on `device`."""
    logits, features = [], []
    for chunk in images.split(batch_size):
        chunk_logits, chunk_features = network.forward_features(to_float(chunk.to(device)))
        logits.append(chunk_logits)
        features.append(chunk_features)
    return torch.cat(logits), torch.cat(features)


def enabled() -> bool:
    """Whether cached outputs are used (`BENCH_FEATURE_CACHE=0` turns them off)."""
    return os.environ.get("BENCH_FEATURE_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def fingerprint(images: torch.Tensor) -> str:
    """A hash of the images' bytes (about 30 ms for 60,000 28x28 images)."""
    array = images.detach().cpu().contiguous().numpy()
    digest = hashlib.sha1(array.data if array.flags.c_contiguous else array.tobytes())  # noqa: S324 - not security
    digest.update(f"{array.dtype}{array.shape}".encode())
    return digest.hexdigest()


def _dtype(network) -> str:
    parameter = next(iter(network.parameters()), None)
    return str(parameter.dtype if parameter is not None else torch.get_default_dtype())


class FeatureCache:
    """Outputs of a trial's trained networks per data split, in the model cache at `root`.

    `models` maps each network's kind to its cache key (the trial's shared models); a network
    that is not among them (one a method provides, a user's model) is never cached.
    """

    def __init__(self, root, models: dict[str, str]):
        self.cache = ModelCache(root)
        self.models = dict(models)

    @classmethod
    def for_trial(cls, root, models) -> "FeatureCache | None":
        """The cache for a trial's models (pairs of kind and key), or None when it is turned off."""
        return cls(root, dict(models)) if enabled() else None

    def covers(self, kind: str) -> bool:
        return kind in self.models

    def split_key(self, network, ref: DataRef, limit: int | None, seed: int) -> str:
        """What determines a network's outputs on a split, beside its weights (the network key)."""
        return content_key({"data": ref.describe(), "limit": limit, "seed": seed, "dtype": _dtype(network),
                            "code": code_hash(__name__)})

    def parts(self, kind: str, network, ref: DataRef, limit: int | None, seed: int) -> tuple[str, ...]:
        """Where in the model cache the outputs of network `kind` on the split are: features/<kind>/<key>/<split>.pt."""
        return "features", kind, self.models[kind], f"{self.split_key(network, ref, limit, seed)}.pt"

    def path(self, kind: str, network, ref: DataRef, limit: int | None, seed: int) -> Path | str:
        return self.cache.storage.path(*self.parts(kind, network, ref, limit, seed))

    def lock(self, parts: tuple[str, ...]):
        """Held around check-compute-save of one split's outputs, so concurrent runs compute them once."""
        return self.cache.storage.lock("-".join(parts[:-1]) + "-" + parts[-1].removesuffix(".pt"))

    def outputs(self, kind: str, network, ref: DataRef, limit: int | None, seed: int, images: torch.Tensor,
                device) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate) of network `kind` on `images`, the subset (`limit`, `seed`) of `ref`, on `device`.

        Read from the cache, else computed (under the split's lock, so a concurrent run waits and reads) and saved.
        """
        parts = self.parts(kind, network, ref, limit, seed)
        images_hash = fingerprint(images)
        found = self._read(parts, images_hash, len(images), warn=False)
        if found is None:
            with self.lock(parts):
                found = self._read(parts, images_hash, len(images), warn=True)
                if found is None:
                    start = time.perf_counter()
                    found = network_outputs(network, images, device)
                    self._write(parts, found, images_hash, device, time.perf_counter() - start)
        logits, penultimate = found
        return logits.to(device), penultimate.to(device)

    def _read(self, parts: tuple[str, ...], images_hash: str, count: int, warn: bool):
        """The saved outputs, or None when there are none or they are unusable (with a warning if `warn`)."""
        storage = self.cache.storage
        path = storage.path(*parts)
        if not storage.exists(*parts):
            return None
        try:
            source = path if storage.local else io.BytesIO(storage.read_bytes(*parts))
            saved = torch.load(source, map_location="cpu", weights_only=True)
            logits, penultimate = saved["logits"], saved["penultimate"]
            problem = None
            if saved.get("images") != images_hash:
                problem = "it was computed from other images"
            elif not (len(logits) == len(penultimate) == count and logits.dim() == 2 and penultimate.dim() == 2):
                problem = (f"it holds outputs of shapes {tuple(logits.shape)} and {tuple(penultimate.shape)} "
                           f"for {count} images")
        except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
            problem = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        if problem is None:
            return logits, penultimate
        if warn:
            log.warning("cached network outputs %s are unusable (%s); computing them again", path, problem)
        return None

    def _write(self, parts: tuple[str, ...], outputs, images_hash: str, device, seconds: float = 0.0) -> None:
        """Save whole: locally via a temporary file and a rename, so readers never see half a file; at a URL as
        one object. Beside the outputs: the images' fingerprint, and the device and seconds that computed them."""
        storage = self.cache.storage
        logits, penultimate = outputs
        saved = {"logits": logits.cpu(), "penultimate": penultimate.cpu(), "images": images_hash, "device": str(device),
                 "seconds": seconds}
        path = storage.path(*parts)
        if not storage.local:
            buffer = io.BytesIO()
            torch.save(saved, buffer)
            storage.fs.pipe_file(path, buffer.getvalue())
            return
        write_atomic(path, lambda handle: torch.save(saved, handle), "wb")
