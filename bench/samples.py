"""Image grids of what a trained generative model makes (CCC's GAN, OSRCI's counterfactuals, ...).

A training procedure that generates images says how to draw them (`SharedModel.samples`); this
module finds the trained model in the cache by the same key `bench run` gives it, draws a seeded
batch and writes it as one PNG grid, for a user to look at.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.protocol import Task
from bench.shared import SHARED_MODELS


def sample_settings(cache: str | None, data_root: str | None):
    """Settings for drawing from cached models on this machine's CPU (nothing is written to a result store)."""
    from bench.runner import Settings

    return Settings(out="unused", cache=cache, data_root=data_root, gpus_per_trial=0).resolved()


def generative_kinds() -> list[str]:
    return [kind for kind, model in SHARED_MODELS.items() if model.samples is not None]


def cached_model(kind: str, task: Task, scale: str, overrides: tuple, seed: int, settings,
                 trained_by: str | None = None) -> torch.nn.Module:
    """The cached shared model of `kind` that `bench run` trained for (task, recipe, seed), in eval mode.

    Missing from the cache: a one-line error saying how to train it (`trained_by`: a method that needs it).
    """
    from bench.runner import build_cached, model_job_for, task_recipe
    from bench.store import ModelCache

    recipe = task_recipe(task, scale, overrides)
    recipe.check()
    kind, key = model_job_for(kind, task, recipe, seed, {})
    if not ModelCache(settings.cache).has(kind, key):
        how = ("`bench run` of a method that needs it, with the same --scale/--recipe/--seeds" if trained_by is None
               else f"`bench run --methods {trained_by} --protocol {task.protocol} --datasets {task.dataset} "
                    f"--partitions {task.partition} --seeds {seed} --scale {scale} --cache {settings.cache}`"
                    + (" and the same --recipe" if overrides else ""))
        raise BenchError(f"no trained {kind} for {task.name} (seed {seed}, scale {scale}) in {settings.cache}; train "
                         f"it first with {how}")
    return build_cached(kind, key, task, recipe, settings).eval()


def draw(kind: str, task: Task, scale: str, overrides: tuple, seed: int, count: int, settings,
         sample_seed: int = 0) -> torch.Tensor:
    """`count` images in [0, 1] from the cached model of `kind` trained for (task, recipe, seed)."""
    spec = SHARED_MODELS.get(kind)
    if spec.samples is None:
        raise BenchError(f"{kind!r} makes no images to look at; models that do: {', '.join(generative_kinds())}")
    model = cached_model(kind, task, scale, overrides, seed, settings)
    with torch.no_grad():
        images = spec.samples(model, task, count, torch.Generator().manual_seed(sample_seed))
    return images.detach().float().clamp(0, 1).cpu()


def save_grid(images: torch.Tensor, output: Path) -> Path:
    """Write images (N, C, H, W) in [0, 1] as one PNG, in a square-ish grid."""
    from torchvision.utils import save_image

    save_image(images, output, nrow=max(1, math.ceil(math.sqrt(len(images)))), padding=2, pad_value=1.0)
    return output
