"""Time bench.metrics.ood_metrics against the scikit-learn calls it replaces.

Run as `python benchmarks/metrics_speed.py`. For each case it takes the best of three
runs of each side, checks the five metrics agree, and prints a markdown table.
"""
from __future__ import annotations

import time

import numpy as np

from bench.metrics import ood_metrics, reference_metrics as sklearn_metrics

REPEATS = 3
N_ID = N_OOD = 500_000


def best_time(fn, *args) -> tuple[float, dict[str, float]]:
    """Fastest of REPEATS wall-clock runs, and the result of the last."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    rng = np.random.default_rng(0)
    id_scores = rng.normal(1.0, 1.0, N_ID)
    ood_scores = rng.normal(0.0, 1.0, N_OOD)
    cases = {
        "continuous, 500k ID + 500k OOD": (id_scores, ood_scores),
        "rounded to 0.01 (~1k distinct)": (id_scores.round(2), ood_scores.round(2)),
        "rounded to 0.1 (~100 distinct)": (id_scores.round(1), ood_scores.round(1)),
        "continuous, 900k ID + 100k OOD": (rng.normal(1.0, 1.0, 900_000), rng.normal(0.0, 1.0, 100_000)),
    }
    print("| case | ours s | sklearn s | speed-up | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for name, (ids, oods) in cases.items():
        ours_s, ours = best_time(ood_metrics, ids, oods)
        ref_s, ref = best_time(sklearn_metrics, ids, oods)
        diff = max(abs(ours[key] - float(ref[key])) for key in ref)
        if diff > 1e-9:
            raise SystemExit(f"{name}: metrics disagree with scikit-learn by {diff:.3g}: {ours} vs {ref}")
        print(f"| {name} | {ours_s:.4f} | {ref_s:.3f} | {ref_s / ours_s:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
