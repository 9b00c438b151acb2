"""SupCSI's score: Tack, Mo, Jeong & Shin, "CSI: Novelty Detection via Contrastive Learning on
Distributionally Shifted Instances", NeurIPS 2020; code github.com/alinlab/CSI.

The network is the shared model `csi` (`bench/shared_models/csi.py`): an encoder trained with
SupCon over 2 views x 4 rotations with joint (class, rotation) labels, then a classifier, a
rotation head and a joint head J (4K outputs, index y + K*k for class y at rotation k) trained
on the frozen encoder.

The score is what CSI's code computes for its labelled model with
`--ood_score baseline_marginalized` (`evals/evals.py`, `compute_ood_score`; the README's
"CSI-ensem"): each rotation k of x is passed through the joint head, only the K logits of
rotation k's block are kept, the four blocks are averaged as logits (not as probabilities),
and the score is the maximum softmax probability over the K classes:

    l_c(x) = 1/4 * sum_{k=0..3} J(f(rot_k(x)))[c + K*k],     ID score = max_c softmax(l(x))_c,

predicted label = argmax_c l_c(x) (CSI's `--mode test_marginalized_acc`). The rotation head
is trained but enters no score of the labelled variant, and the projector's similarities are
used only by the unlabelled CSI score.

`ensemble=False` gives CSI's single-inference score (`--ood_score baseline`, the README's
"CSI"): the maximum softmax probability of the classifier on x, labels its argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import Detector, FitContext, Prediction, register_method, resolve_network
from bench.shared_models.csi import ROTATIONS, rotate


def ensemble_logits(joint: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(4, B, 4K) joint-head logits, entry k for rotation k of each image -> (B, K): the mean over
    k of rotation k's own block of K logits."""
    blocks = [joint[k, :, num_classes * k:num_classes * (k + 1)] for k in range(ROTATIONS)]
    return torch.stack(blocks).mean(0)


def joint_logits(net, x: torch.Tensor) -> torch.Tensor:
    """(4, B, 4K) joint-head logits of the 4 rotations of a float batch."""
    rotated, _ = rotate(x)
    return net.joint_head(net.backbone(rotated)).unflatten(0, (ROTATIONS, len(x)))


def msp(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).max(dim=1).values


@dataclass
class CSI(Detector):
    """SupCSI: max softmax of the joint head's class logits averaged over the 4 rotations."""

    ensemble: bool = True  # False: CSI's single inference, max softmax of the linear classifier
    requires = ("csi",)

    def fit(self, ctx: FitContext) -> "CSI":
        self.net_ = resolve_network("csi", ctx).eval()
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        if self.ensemble:
            logits = ensemble_logits(joint_logits(self.net_, x), self.net_.num_classes)
        else:
            logits = self.net_(x)
        return Prediction(msp(logits), logits.argmax(dim=1))


register_method("csi", CSI)
