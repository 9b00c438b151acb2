"""OpenMax: Bendale & Boult, "Towards Open Set Deep Networks", CVPR 2016.

Fit, on ID training data: the mean logit vector (MAV) of each class over its correctly
classified images, and per class a Weibull model of the `tail_size` largest distances
from those images to their MAV. Test: for the `alpha` top-ranked classes, with rank weight
w_i = (alpha + 1 - i) / alpha, shrink logit v_c by the factor 1 - w_i * CDF_c(d(v, MAV_c))
and move what was removed to an "unknown" logit; softmax over the N + 1 logits.
ID score = minus the probability of the unknown class. Distance "eucos" is the reference
code's Euclidean / 200 + cosine distance.

Two Weibull fits (option `weibull`):
- "libmr" (default), as libMR's FitHigh does it in the paper's reference code: move the
  tail so that its smallest distance sits at `LIBMR_TRANSLATE` (10000), fit a two-parameter
  Weibull by maximum likelihood to the moved tail, and move every test distance by the same
  amount before reading the CDF;
- "scipy": scipy's `weibull_min` fitted to the raw tail with the location fixed at 0.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.stats import weibull_min

from bench.errors import BenchError
from bench.method import ClassifierDetector, option, register_method


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


# libMR's default translate_amount in the copy that the OpenMax reference code ships, builds
# and calls with defaults (abhijitbendale/OSDN: libMR/MetaRecognition.h, libMR/libmr.pyx).
# The current Vastlab/libMR sources default to 1 instead (pass translate=1.0 for that).
LIBMR_TRANSLATE = 10000.0


def weibull_mle(sample: np.ndarray) -> tuple[float, float]:
    """(shape, scale) maximising the two-parameter Weibull likelihood of a positive sample
    with at least two distinct values.

    This is the estimator of libMR's `weibull_fit` (and, in exact arithmetic, of scipy's
    `weibull_min.fit(sample, floc=0)`): libMR takes logs, so that the sample is Gumbel
    (minimum) distributed with location log(scale) and scale 1/shape, solves the one-variable
    likelihood equation for the Gumbel scale, and gets the location in closed form. We solve
    the same equation, on logs mapped to [-1, 0], with Brent's method to near machine
    precision; libMR stops its root search at an absolute error of about 2e-6 on that mapped
    scale, so the two agree to about 1e-5 relative in the shape (and 1e-6 in the CDF).
    scipy's generic optimiser is not used: with libMR's translation the moved tail sits near
    10000 and spans little, so the shape runs to 1e5 and beyond (1e7 for distances of order
    1e-3), where scipy's starting guess and optimiser break down.
    """
    logs = np.log(np.asarray(sample, dtype=np.float64))
    top, spread = logs.max(), np.ptp(logs)
    if not spread > 0:
        raise ValueError("a Weibull needs at least two distinct values to fit")
    y = (logs - top) / spread  # in [-1, 0], with 0 attained
    mean_y = y.mean()

    def equation(sigma):  # increasing in sigma; negative near 0, positive at 1
        weights = np.exp(y / sigma)
        return sigma + mean_y - (weights @ y) / weights.sum()

    lower = 0.5
    while equation(lower) > 0 and lower > 1e-300:
        lower /= 2
    sigma = brentq(equation, lower, 1.0, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    location = sigma * np.log(np.mean(np.exp(y / sigma)))
    return float(1 / (spread * sigma)), float(np.exp(top + spread * location))


def fit_weibull_libmr(distances: np.ndarray, tail_size: int,
                      translate: float = LIBMR_TRANSLATE) -> tuple[float, float, float]:
    """(shape, scale, shift) as libMR's FitHigh fits the `tail_size` largest distances.

    The tail is moved by shift = translate - (its smallest value) before the maximum-likelihood
    fit; `weibull_cdf(d, shape, scale, shift)` then gives libMR's W-score of a distance d.
    A tail without two distinct values, which libMR cannot fit (its model is then invalid),
    gives scale 0: a step from 0 to 1 just above the tail's value.
    """
    tail = np.sort(np.asarray(distances, dtype=np.float64))[-tail_size:]
    shift = translate - tail[0]
    moved = tail + shift
    if len(tail) < 2 or not np.ptp(np.log(moved)) > 0:
        return 1.0, 0.0, 0.0 - float(tail[-1])
    shape, scale = weibull_mle(moved)
    return shape, scale, float(shift)


FITS = {
    "libmr": fit_weibull_libmr,
    "scipy": lambda distances, tail_size: (*fit_weibull_tail(distances, tail_size), 0.0),
}


def weibull_cdf(distances: torch.Tensor, shape: torch.Tensor, scale: torch.Tensor,
                shift: torch.Tensor | None = None) -> torch.Tensor:
    """Weibull CDF per column at distance + shift (libMR's translation; none for the raw fit),
    0 where that is negative; a zero scale marks a step: 1 where distance + shift > 0."""
    moved = distances if shift is None else distances + shift
    safe_scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    cdf = 1 - torch.exp(-(moved.clamp(min=0) / safe_scale) ** shape)
    return torch.where(scale > 0, cdf, (moved > 0).to(cdf.dtype))


def openmax_logits(logits, distances, shape, scale, alpha: int, shift=None) -> torch.Tensor:
    """The N recalibrated logits followed by the unknown logit, (B, N + 1)."""
    alpha = min(alpha, logits.shape[1])
    ranks = logits.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = top class
    weights = ((alpha - ranks) / alpha).clamp(min=0)
    shrink = weights * weibull_cdf(distances, shape, scale, shift)
    kept = logits * (1 - shrink)
    return torch.cat([kept, (logits - kept).sum(dim=1, keepdim=True)], dim=1)


@dataclass
class OpenMax(ClassifierDetector):
    """Minus OpenMax's probability of the unknown class (Weibull-recalibrated logits)."""

    tail_size: int = option(20, ge=1)
    alpha: int = option(10, ge=1)
    distance: str = option("eucos", choices=DISTANCES)
    weibull: str = option("libmr", choices=FITS)  # the tail fit (not `fit`, which is the Detector method)

    def fit_outputs(self, logits, penultimate, labels):
        if self.distance not in DISTANCES:
            raise BenchError(f"openmax distance {self.distance!r} is unknown; choose one of {', '.join(DISTANCES)}")
        if self.weibull not in FITS:
            raise BenchError(f"openmax weibull {self.weibull!r} is unknown; choose one of {', '.join(FITS)}")
        logits = logits.double()
        correct = logits.argmax(1) == labels
        means, fits = [], []
        for c in range(logits.shape[1]):
            members = correct & (labels == c)
            if not members.any():  # a class the classifier never gets right: use all of its images
                members = labels == c
            means.append(logits[members].mean(dim=0))
            own = DISTANCES[self.distance](logits[members], means[-1][None])[:, 0]
            fits.append(FITS[self.weibull](own.cpu().numpy(), self.tail_size))
        self.means_ = torch.stack(means)
        self.shape_, self.scale_, self.shift_ = (
            torch.tensor(v, dtype=torch.float64, device=logits.device) for v in zip(*fits, strict=True))

    def score_outputs(self, logits, penultimate):
        logits = logits.double()
        distances = DISTANCES[self.distance](logits, self.means_)
        recalibrated = openmax_logits(logits, distances, self.shape_, self.scale_, self.alpha, self.shift_)
        return -recalibrated.softmax(dim=1)[:, -1].float()


register_method("openmax", OpenMax)
