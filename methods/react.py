"""ReAct: Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021.

Clip the penultimate activations at c, the `percentile`-th percentile of all activations
on ID training data, recompute the logits with the final layer, and score them with
energy: ID score = logsumexp(W min(h(x), c) + b). `percentile=100` turns clipping off
(it is then exactly the energy score), so the percentile can be swept up to no clipping.

As a network (`react+cmg_e`, `knn[net=react]`) ReAct is the scored network with the clipping
kept in its forward pass (`Rectified`).
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.method import ClassifierDetector, option, register_method
from methods.energy import negative_energy


class Rectified(nn.Module):
    """A network whose penultimate activations are clipped at `threshold` before its final layer."""

    def __init__(self, network: nn.Module, threshold: float):
        super().__init__()
        self.network, self.threshold = network, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        clipped = self.network.forward_features(x)[1].clamp(max=self.threshold)
        return self.final_layer(clipped), clipped

    @property
    def final_layer(self) -> nn.Linear:
        return self.network.final_layer


@dataclass
class ReAct(ClassifierDetector):
    """Energy after clipping penultimate activations at an ID-training percentile."""

    percentile: float = option(90.0, gt=0, le=100)  # 100: no clipping

    def fit_outputs(self, logits, penultimate, labels):
        if self.percentile >= 100:
            self.threshold_ = float("inf")
        else:  # numpy: torch.quantile refuses tensors of more than 2^24 values
            self.threshold_ = float(np.percentile(penultimate.cpu().numpy(), self.percentile))

    def network(self) -> Rectified:
        return Rectified(self.classifier_, self.threshold_)

    def score_outputs(self, logits, penultimate):
        clipped = penultimate.clamp(max=self.threshold_)
        return negative_energy(self.classifier_.final_layer(clipped))


register_method("react", ReAct)
