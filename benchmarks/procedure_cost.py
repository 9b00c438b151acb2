"""What a training procedure costs at a scale, per stage, without running its whole schedule.

    python benchmarks/procedure_cost.py --kinds supclr,csi --scale paper            # on a GPU machine
    python benchmarks/procedure_cost.py --kinds classifier,cvae,cac --scale demo --device cpu

For each procedure (shared-model kind) and each stage of its recipe (every nested recipe
dataclass with an `epochs` field), the procedure is trained with that stage at `--epochs`
epochs (default 1) and every other stage at 0, on one Setting 1 partition; the time of one
epoch of the stage is the measured time divided by `--epochs`. The projection for the full
schedule is the sum over stages of (the stage's epochs x its time per epoch). Fixed costs of
a stage (features computed once, data moved to the device) are counted once per epoch, so the
projection is an upper bound. Nothing is cached; the weights are thrown away.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from bench.protocol import PROTOCOLS
from bench.runner import Settings, load_ref, seed_everything, task_recipe
from bench.shared import SHARED_MODELS
from bench.training import TrainInputs


def stage_paths(part, prefix=()) -> list[tuple]:
    """Field paths of every nested dataclass in `part` that has an `epochs` field."""
    paths = [prefix] if dataclasses.is_dataclass(part) and hasattr(part, "epochs") else []
    if dataclasses.is_dataclass(part):
        for field in dataclasses.fields(part):
            paths += stage_paths(getattr(part, field.name), prefix + (field.name,))
    return paths


def with_epochs(part, path: tuple, epochs: int):
    if not path:
        return dataclasses.replace(part, epochs=epochs)
    child = getattr(part, path[0])
    return dataclasses.replace(part, **{path[0]: with_epochs(child, path[1:], epochs)})


def get(part, path: tuple):
    for name in path:
        part = getattr(part, name)
    return part


def measure(kind: str, task, recipe, part, device: torch.device, settings: Settings) -> float:
    """Seconds to build and train `kind` with its recipe part replaced by `part`."""
    spec = SHARED_MODELS.get(kind)
    module = __import__(spec.train.__module__, fromlist=["RECIPES"])
    table = module.RECIPES
    key = next(k for k in ((recipe.family, recipe.scale), recipe.scale) if k in table)
    original = table[key]
    table[key] = part
    try:
        generator = seed_everything(0)
        train = load_ref(task.id_train, settings, recipe.train_limit, 0)
        dependencies = {dep: SHARED_MODELS.get(dep).build(task, recipe).to(device).eval() for dep in spec.requires}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model = spec.build(task, recipe).to(device)
        spec.train(model, TrainInputs(task, train, recipe, device, generator, dependencies, 0))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    finally:
        table[key] = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", required=True)
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--partition", default="0-5")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    task = PROTOCOLS.get("setting1").tasks([args.dataset], [args.partition])[0]
    recipe = task_recipe(task, args.scale)
    settings = Settings(out="unused")
    rows = []
    for kind in args.kinds.split(","):
        spec = SHARED_MODELS.get(kind)
        module = __import__(spec.train.__module__, fromlist=["RECIPES"])
        part = recipe.pick(module.RECIPES)
        paths = stage_paths(part)
        zeroed = part
        for path in paths:
            zeroed = with_epochs(zeroed, path, 0)
        projected = 0.0
        for path in paths:
            seconds = measure(kind, task, recipe, with_epochs(zeroed, path, args.epochs), device, settings)
            per_epoch = seconds / args.epochs
            full = get(part, path).epochs
            projected += per_epoch * full
            rows.append({"kind": kind, "stage": ".".join(path) or "(one stage)", "epochs": full,
                         "s_per_epoch": round(per_epoch, 2), "stage_minutes": round(per_epoch * full / 60, 1)})
            print(json.dumps(rows[-1]), flush=True)
        print(json.dumps({"kind": kind, "projected_minutes": round(projected / 60, 1), "scale": args.scale,
                          "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}), flush=True)


if __name__ == "__main__":
    main()
