"""CAC's score: Miller, Sünderhauf, Milford & Dayoub, "Class Anchor Clustering: a Loss for
Distance-based Open Set Recognition", WACV 2021 (github.com/dimitymiller/cac-openset), on the
network trained with the class-anchor loss (`bench/shared_models/cac.py`).

After training, the anchors are replaced by the class means mu_c of the network's outputs
(logit vectors) on the training images it classifies correctly; for datasets trained with
flips (CIFAR, TinyImageNet) the horizontally flipped training images count too
(`utils.py` `find_anchor_means(only_correct=True)`, `datasets/utils.py` `load_anchor_datasets`).
With d_c = ||z(x) - mu_c||_2, each class gets the rejection score d_c * (1 - softmin(d)_c)
(`gather_outputs(calculate_scores=True)`), and

    ID score = - min_c d_c * (1 - softmin(d)_c);   label = argmin_c d_c

(`metrics.py` takes the minimum for AUROC and the argmin for accuracy; d * (1 - softmin(d))
grows with d, so its argmin is the nearest class mean).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from bench.errors import BenchError
from bench.method import ClassifierDetector, Prediction, classifier_outputs, register_method, resolve_network
from bench.shared_models.cac import anchor_distances

log = logging.getLogger(__name__)


def correct_class_means(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) mean output of each class over its training images whose largest output is their label.

    With anchors alpha * e_c, the largest output is also the nearest anchor. A class with no
    correctly classified image falls back to the mean over all its images.
    """
    outputs = outputs.double()
    correct = outputs.argmax(1) == labels
    means = []
    for c in range(num_classes):
        mask = (labels == c) & correct
        if not mask.any():
            if not (labels == c).any():
                raise BenchError(f"cac: no training image of class {c} to place its class mean")
            log.warning("cac: no training image of class %d is classified correctly; its mean uses all of them", c)
            mask = labels == c
        means.append(outputs[mask].mean(dim=0))
    return torch.stack(means)


def cac_score(outputs: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """ID score -min_c d_c * (1 - softmin(d)_c), d the Euclidean distances of `outputs` to the class `means`."""
    distances = anchor_distances(outputs.double(), means)
    rejection = distances * (1 - torch.softmax(-distances, dim=1))
    return -rejection.min(dim=1).values.float()


@dataclass
class CAC(ClassifierDetector):
    """Distance to the class means of correct training logits, weighted by 1 - softmin (CAC)."""

    net: str = "cac"

    def fit(self, ctx) -> "CAC":
        self.classifier_ = resolve_network(self.net, ctx).eval()
        images, labels = ctx.train.images, ctx.train_labels()
        outputs = classifier_outputs(self.classifier_, images, ctx.device)[0]
        if ctx.recipe is not None and ctx.recipe.augment:  # the reference adds flipped copies for non-digit sets
            outputs = torch.cat([outputs, classifier_outputs(self.classifier_, images.flip(-1), ctx.device)[0]])
            labels = torch.cat([labels, labels])
        self.fit_outputs(outputs, None, labels)
        return self

    def fit_outputs(self, logits, penultimate, labels):
        self.means_ = correct_class_means(logits, labels, logits.shape[1])

    def score_outputs(self, logits, penultimate):
        return cac_score(logits, self.means_)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        logits = self.classifier_.forward_features(x)[0]
        label = anchor_distances(logits.double(), self.means_).argmin(1)
        return Prediction(self.score_outputs(logits, None), label)


register_method("cac", CAC)
