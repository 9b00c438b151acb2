"""OpenMax: Bendale & Boult, "Towards Open Set Deep Networks", CVPR 2016.

Fit, on ID training data: the mean logit vector (MAV) of each class over its correctly
classified images, and per class a Weibull model of the `tail_size` largest distances
from those images to their MAV (scipy's `weibull_min`, location fixed at 0, in place of
libMR's FitHigh). Test: for the `alpha` top-ranked classes, with rank weight
w_i = (alpha + 1 - i) / alpha, shrink logit v_c by the factor 1 - w_i * CDF_c(d(v, MAV_c))
and move what was removed to an "unknown" logit; softmax over the N + 1 logits.
ID score = minus the probability of the unknown class. Distance "eucos" is the reference
code's Euclidean / 200 + cosine distance.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import weibull_min

from bench.errors import BenchError
from bench.method import ClassifierDetector, register_method


def _euclidean(logits, means):
    return torch.cdist(logits, means)


def _cosine(logits, means):
    return 1 - F.normalize(logits, dim=1) @ F.normalize(means, dim=1).T


DISTANCES = {
    "euclidean": _euclidean,
    "cosine": _cosine,
    "eucos": lambda logits, means: _euclidean(logits, means) / 200 + _cosine(logits, means),
}


def fit_weibull_tail(distances: np.ndarray, tail_size: int) -> tuple[float, float]:
    """(shape, scale) of a Weibull fitted to the largest distances; scale 0 marks a step at 0."""
    tail = np.sort(distances)[-tail_size:]
    if tail.max() <= 0:
        return 1.0, 0.0
    shape, _, scale = weibull_min.fit(tail[tail > 0], floc=0)
    return float(shape), float(scale)


def weibull_cdf(distances: torch.Tensor, shape: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Weibull CDF per column; a zero scale (all tail distances 0) is the step at 0."""
    safe_scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    cdf = 1 - torch.exp(-(distances.clamp(min=0) / safe_scale) ** shape)
    return torch.where(scale > 0, cdf, (distances > 0).to(cdf.dtype))


def openmax_logits(logits, distances, shape, scale, alpha: int) -> torch.Tensor:
    """The N recalibrated logits followed by the unknown logit, (B, N + 1)."""
    alpha = min(alpha, logits.shape[1])
    ranks = logits.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = top class
    weights = ((alpha - ranks) / alpha).clamp(min=0)
    shrink = weights * weibull_cdf(distances, shape, scale)
    kept = logits * (1 - shrink)
    return torch.cat([kept, (logits - kept).sum(dim=1, keepdim=True)], dim=1)


@dataclass
class OpenMax(ClassifierDetector):
    """Minus OpenMax's probability of the unknown class (Weibull-recalibrated logits)."""

    tail_size: int = 20
    alpha: int = 10
    distance: str = "eucos"

    def fit_outputs(self, logits, penultimate, labels):
        if self.distance not in DISTANCES:
            raise BenchError(f"openmax distance {self.distance!r} is unknown; choose one of {', '.join(DISTANCES)}")
        logits = logits.double()
        correct = logits.argmax(1) == labels
        means, fits = [], []
        for c in range(logits.shape[1]):
            members = correct & (labels == c)
            if not members.any():  # a class the classifier never gets right: use all of its images
                members = labels == c
            means.append(logits[members].mean(dim=0))
            own = DISTANCES[self.distance](logits[members], means[-1][None])[:, 0]
            fits.append(fit_weibull_tail(own.cpu().numpy(), self.tail_size))
        self.means_ = torch.stack(means)
        self.shape_, self.scale_ = (torch.tensor(v, dtype=torch.float64, device=logits.device) for v in zip(*fits, strict=True))

    def score_outputs(self, logits, penultimate):
        logits = logits.double()
        distances = DISTANCES[self.distance](logits, self.means_)
        recalibrated = openmax_logits(logits, distances, self.shape_, self.scale_, self.alpha)
        return -recalibrated.softmax(dim=1)[:, -1].float()


register_method("openmax", OpenMax)
