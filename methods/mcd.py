"""MCD's score: Yu & Aizawa, "Unsupervised Out-of-Distribution Detection by Maximum Classifier
Discrepancy", ICCV 2019 (reference code: OpenOOD, `openood/postprocessors/mcd_postprocessor.py`),
on the two-head network trained with the entropy-discrepancy loss (`bench/shared_models/mcd.py`).

With p1, p2 the softmaxes of the two heads,

    ID score = - sum_c |p1_c - p2_c|;   label = argmax_c p1_c

(the first head's label, as the reference). The heads agree on ID images and were trained to
disagree off them, so a small L1 distance means in-distribution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import Detector, FitContext, Prediction, register_method, resolve_network


def discrepancy_score(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """(B,) minus the L1 distance between the two heads' softmaxes over the classes."""
    return -(logits1.softmax(dim=1) - logits2.softmax(dim=1)).abs().sum(dim=1)


@dataclass
class MCD(Detector):
    """Minus the L1 distance between the softmaxes of the two heads (MCD)."""

    requires = ("mcd",)

    def fit(self, ctx: FitContext) -> "MCD":
        self.net_ = resolve_network("mcd", ctx).eval()
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        logits1, logits2 = self.net_.both_heads(x)
        return Prediction(discrepancy_score(logits1, logits2), logits1.argmax(dim=1))


register_method("mcd", MCD)
