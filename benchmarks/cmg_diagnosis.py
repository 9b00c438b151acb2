"""Where CMG's pseudo-OOD data sit relative to real ID and OOD test data, on one task.

    python benchmarks/cmg_diagnosis.py --dataset fashion_mnist --partition 0-5 --scale demo \
        [--methods cmg_e,cmg_e[sigma=1]] [--grid pseudo.png]

Trains (or takes from the cache) the task's classifier and CVAE, fits each method, and
prints for each: AUROC of ID test vs real OOD test, AUROC of ID test vs fresh pseudo-OOD
samples, and the mean ID score of the three sets. `--grid` saves pseudo-OOD samples.
"""
from __future__ import annotations

import argparse

import torch

from bench.method import FitContext, parse_methods
from bench.metrics import ood_metrics
from bench.protocol import PROTOCOLS
from bench.runner import Settings, build_cached, load_ref, plan, seed_everything, train_shared_model
from methods.cmg import generate_pseudo_ood

PSEUDO_SAMPLES = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--partition", default="0-5")
    parser.add_argument("--scale", default="demo")
    parser.add_argument("--methods", default="energy,cmg_e,cmg_e[sigma=1],cmg_s", help="must include a CMG method")
    parser.add_argument("--sigma", type=float, default=5.0, help="sigma of the pseudo-OOD probe samples")
    parser.add_argument("--cache")
    parser.add_argument("--grid", help="save 64 pseudo-OOD samples to this PNG")
    args = parser.parse_args()

    task = PROTOCOLS.get("setting1").tasks([args.dataset], [args.partition])[0]
    settings = Settings(out="unused", cache=args.cache)
    methods = parse_methods(args.methods)
    trials, jobs = plan([task], methods, [0], args.scale)
    for job in jobs.values():
        train_shared_model(job, settings)
    recipe = trials[0].recipe
    pairs = {pair for trial in trials for pair in trial.models}
    models = {kind: build_cached(kind, key, task, recipe, settings) for kind, key in pairs}
    train = load_ref(task.id_train, settings, recipe.train_limit, 0)
    id_test = load_ref(task.id_test, settings, recipe.test_limit, 0).images.float() / 255
    ood_test = load_ref(task.ood_tests["unknown_classes"], settings, recipe.test_limit, 0).images.float() / 255
    pseudo = generate_pseudo_ood(models["cvae"], PSEUDO_SAMPLES, args.sigma, torch.Generator().manual_seed(123), "cpu")
    if args.grid:
        import torchvision

        torchvision.utils.save_image(pseudo[:64], args.grid, nrow=16)

    print(f"{task.name}, {args.scale} scale, probe: {PSEUDO_SAMPLES} pseudo-OOD samples at sigma {args.sigma:g}\n")
    print("| method | AUROC ID vs real OOD | AUROC ID vs pseudo-OOD | mean score ID | real OOD | pseudo-OOD |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in methods:
        method = spec.build().fit(FitContext(task, train, models, recipe, 0, torch.device("cpu"), seed_everything(0)))
        with torch.no_grad():
            scores = [method.predict(images).score.numpy() for images in (id_test, ood_test, pseudo)]
        real = ood_metrics(scores[0], scores[1])["auroc"]
        fake = ood_metrics(scores[0], scores[2])["auroc"]
        means = " | ".join(f"{s.mean():.2f}" for s in scores)
        print(f"| {spec.label} | {100 * real:.1f} | {100 * fake:.1f} | {means} |")


if __name__ == "__main__":
    main()
