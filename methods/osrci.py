"""OSRCI's score: Neal, Olson, Fern, Wong & Li, "Open Set Learning with Counterfactual Images",
ECCV 2018 (github.com/lwneal/counterfactual-open-set), on the K+1 classifier trained with
counterfactual images (`bench/shared_models/osrci.py`).

The reference never gives the unknown class weights of its own: its K+1 classifier has K
outputs, and both its training (`F.pad(logits, (0, 1))`) and its default open-set score
(`openset_kplusone` in `evaluation.py`) append a constant 0 as the unknown class's logit.
With S = sum_c exp(l_c) over the K known logits,

    P(unknown) = 1 / (1 + S);   ID score = -P(unknown);   label = argmax_c l_c.

-1 / (1 + S) rises with log S, so on the same network this score ranks images as
`energy[net=osrci]` does, except where the float32 scores tie (S below about 1e-7 or above
about 1e38, where P(unknown) rounds to 1 or 0). The reference's `start.sh` evaluates its final
classifier in another mode (`fuxin`: P(unknown) - max_c P(c) under the K+1 softmax); SPEC.md
section 5 asks for P(unknown), as here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import ClassifierDetector, register_method
from bench.shared_models.osrci import known_mass


def unknown_probability(logits: torch.Tensor) -> torch.Tensor:
    """1 / (1 + sum_c exp l_c): the softmax weight of a fixed-zero logit beside the K known ones."""
    return torch.exp(-known_mass(logits.double()))


@dataclass
class OSRCI(ClassifierDetector):
    """Minus the probability of the unknown class (a fixed-zero logit) of the K+1 classifier (OSRCI)."""

    net: str = "osrci"

    def score_outputs(self, logits, penultimate):
        return -unknown_probability(logits).float()


register_method("osrci", OSRCI)
