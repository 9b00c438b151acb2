"""ReAct: Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021.

Clip the penultimate activations at c, the `percentile`-th percentile of all activations
on ID training data, recompute the logits with the final layer, and score them with
energy: ID score = logsumexp(W min(h(x), c) + b). `percentile=100` turns clipping off
(it is then exactly the energy score), so the percentile can be swept up to no clipping.
"""
from dataclasses import dataclass

import numpy as np

from bench.method import ClassifierDetector, register_method
from methods.energy import negative_energy


@dataclass
class ReAct(ClassifierDetector):
    """Energy after clipping penultimate activations at an ID-training percentile."""

    percentile: float = 90.0

    def fit_outputs(self, logits, penultimate, labels):
        if self.percentile >= 100:
            self.threshold_ = float("inf")
        else:  # numpy: torch.quantile refuses tensors of more than 2^24 values
            self.threshold_ = float(np.percentile(penultimate.cpu().numpy(), self.percentile))

    def score_outputs(self, logits, penultimate):
        clipped = penultimate.clamp(max=self.threshold_)
        return negative_energy(self.classifier_.final_layer(clipped))


register_method("react", ReAct)
