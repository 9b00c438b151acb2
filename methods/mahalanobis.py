"""Mahalanobis distance: Lee et al., "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018.

Fit on the penultimate features of the ID training data: one mean per class and one
covariance shared by all classes (the "tied" Gaussian discriminant). ID score =
max_c -(f - mu_c)^T S^-1 (f - mu_c). The original also perturbs the input and combines
the distances of every block with a logistic regression fitted on OOD samples; fitting on
OOD data is not allowed here, so this is the penultimate-layer score alone (SPEC.md §5).
"""
from dataclasses import dataclass

import torch

from bench.method import ClassifierDetector, register_method


def class_means_and_precision(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class means and the pseudo-inverse of the within-class (tied) covariance."""
    features = features.double()
    means = torch.stack([features[labels == c].mean(dim=0) for c in range(num_classes)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    return means, torch.linalg.pinv(covariance, hermitian=True)


def min_mahalanobis(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of every row to its closest class mean."""
    diff = features.double()[:, None, :] - means[None, :, :]  # (B, K, D)
    return torch.einsum("bkd,de,bke->bk", diff, precision, diff).min(dim=1).values


@dataclass
class Mahalanobis(ClassifierDetector):
    """Minus the Mahalanobis distance to the closest class mean (tied covariance)."""

    def fit_outputs(self, logits, penultimate, labels):
        self.means_, self.precision_ = class_means_and_precision(penultimate, labels, logits.shape[1])

    def score_outputs(self, logits, penultimate):
        return -min_mahalanobis(penultimate, self.means_, self.precision_).float()


register_method("mahalanobis", Mahalanobis)
