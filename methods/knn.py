"""Deep nearest neighbours (KNN): Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with
Deep Nearest Neighbors", ICML 2022.

The bank is the L2-normalised penultimate features of the ID training data; ID score =
minus the Euclidean distance from the normalised test feature to its k-th nearest
neighbour in the bank (k = 50). The search is exact and runs in torch, over blocks of
queries and of the bank, so memory stays bounded (about `block` x `block` distances)
even for 50k queries against a 50k bank.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import ClassifierDetector, option, register_method


def kth_neighbour_distance(queries: torch.Tensor, bank: torch.Tensor, k: int, block: int = 4096) -> torch.Tensor:
    """Exact Euclidean distance from each query row to its k-th nearest bank row."""
    results = []
    for query in queries.split(block):
        nearest = torch.empty(len(query), 0, dtype=query.dtype, device=query.device)
        for part in bank.split(block):  # keep a running k smallest, one bank block at a time
            candidates = torch.cat([nearest, torch.cdist(query, part)], dim=1)
            nearest = candidates.topk(min(k, candidates.shape[1]), dim=1, largest=False).values
        results.append(nearest[:, k - 1])
    return torch.cat(results)


@dataclass
class KNN(ClassifierDetector):
    """Minus the distance to the k-th nearest ID training feature (L2-normalised)."""

    k: int = option(50, ge=1)  # at most the number of training images, checked in fit

    def fit_outputs(self, logits, penultimate, labels):
        if not 1 <= self.k <= len(penultimate):
            raise BenchError(f"knn needs 1 <= k <= the {len(penultimate)} training images; got k={self.k}")
        self.bank_ = F.normalize(penultimate.float(), dim=1)

    def score_outputs(self, logits, penultimate):
        return -kth_neighbour_distance(F.normalize(penultimate.float(), dim=1), self.bank_, self.k)


register_method("knn", KNN)
