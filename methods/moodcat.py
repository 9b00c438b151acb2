"""MOODCAT: OOD detection by semantic mismatch under masking (Yang, Gao, Xu; ECCV 2022).

Paper: ../shared/papers/moodcat.txt; reference code: github.com/cure-lab/MOODCat (facts in
SPEC.md section 4; the training code of C_b is not released).

At test time, for an image x: y = the shared ID classifier's prediction (never the ground
truth); mask one random rectangle (15-33% of the area); synthesise x' = D(E(M(x)), y) with
the cached generator; score the pair with each scorer:
- `cb`: the conditional binary classifier C_b((x, x'), y) (cached; trained with the hinge
  loss on true-label vs wrong-label syntheses, optionally with external negatives);
- `lpips`, `dists`: minus the perceptual distance between x and x' (package `piq`, with
  ImageNet weights read from `iqa_weights`, a torch-hub folder; see `IQA_WEIGHTS`).
The scorers form a cascade in which any scorer can reject: each score is mapped to its
percentile among the scores of the task's ID validation images (`Task.id_val`, held out from
the ID training split, so seen by neither the generator nor C_b), and the ID score is the minimum. The released code instead picks
thresholds on the test set; nothing here sees test data before scoring.

Ablations of the paper are options: `mask="none"` or `"fixed"` (generator trained and
tested without masks / with a fixed 30% mask; `test_mask` tests with another style),
`conditional=False` (unconditional generator), `scorers="lpips"`, `"cb+lpips+dists"`, ...,
and `external="<dataset>"` (C_b also trained on that set's unlabeled images as negatives).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import Detector, FitContext, Prediction, option, register_method, to_float
from bench.nets.moodcat import MASK_RATIOS, mask_ratios
from bench.shared_models.moodcat import generator_variant, pair_classifier_kind, synthesize

log = logging.getLogger(__name__)

# Perceptual scorer -> (piq class name, torch-hub checkpoint files it loads: the VGG16 backbone
# of torchvision and the metric's own weights).
IQA_WEIGHTS = {
    "lpips": ("LPIPS", ("vgg16-397923af.pth", "lpips_weights.pt")),
    "dists": ("DISTS", ("vgg16-397923af.pth", "dists_weights.pt")),
}
SCORERS = ("cb", *IQA_WEIGHTS)
VGG_MIN_SIZE = 32


def _vgg_input(images: torch.Tensor) -> torch.Tensor:
    """3 channels in [0, 1], at least 32 pixels: VGG16's five poolings leave nothing of 28x28 inputs."""
    images = images.clamp(0, 1).expand(-1, 3, -1, -1)
    if min(images.shape[2:]) < VGG_MIN_SIZE:
        images = F.interpolate(images, size=(VGG_MIN_SIZE, VGG_MIN_SIZE), mode="bilinear", align_corners=False)
    return images


def calibrated(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Percentile of each score among the sorted ID `reference` scores, interpolated linearly and
    extended linearly beyond the reference range, so the map stays strictly increasing (no ties)."""
    ref = reference.double().numpy()
    levels = np.arange(1, len(ref) + 1) / len(ref)
    spread = max(ref[-1] - ref[0], 1e-12)
    values = scores.double().numpy()
    inside = np.interp(values, ref, levels)
    below = levels[0] + (values - ref[0]) / spread
    above = levels[-1] + (values - ref[-1]) / spread
    return torch.from_numpy(np.where(values < ref[0], below, np.where(values > ref[-1], above, inside)))


def cascade(percentiles: dict[str, torch.Tensor]) -> torch.Tensor:
    """The cascade's ID score: the smallest percentile, so any scorer below a threshold rejects."""
    return torch.stack(list(percentiles.values())).min(dim=0).values


def load_iqa(name: str, weights: str | None):
    """A piq perceptual metric with local weights, or (None, why not)."""
    class_name, files = IQA_WEIGHTS[name]
    folder = Path(weights).expanduser() / "checkpoints" if weights else None
    missing = [file for file in files if folder is None or not (folder / file).is_file()]
    if missing:
        where = f"in {folder}" if folder else "(no iqa_weights folder given)"
        return None, f"{name} weights missing {where}: {', '.join(missing)}"
    try:
        import piq
    except ImportError:
        return None, f"{name} needs the package piq (pip install piq)"
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(folder.parent))  # piq and torchvision read checkpoints from here, no download
    try:
        return getattr(piq, class_name)(reduction="none").eval(), ""
    finally:
        torch.hub.set_dir(previous)


@dataclass
class MOODCAT(Detector):
    """Masked conditional synthesis scored by C_b (and LPIPS/DISTS when weights are present)."""

    mask: str = option("random", choices=MASK_RATIOS)
    test_mask: str | None = option(None, choices=MASK_RATIOS)  # None: the generator's own mask style
    conditional: bool = True
    scorers: str = "cb"
    external: str | None = None
    iqa_weights: str | None = None

    @property
    def requires(self) -> tuple[str, ...]:
        variant = generator_variant(self.mask, self.conditional)
        pair = (pair_classifier_kind(variant, self.external),) if "cb" in self._scorer_names() else ()
        return ("classifier", variant.kind, *pair)

    def _scorer_names(self) -> list[str]:
        names = [name.strip() for name in str(self.scorers).split("+")]
        unknown = [name for name in names if name not in SCORERS]
        if unknown or not names:
            raise BenchError(f"MOODCAT scorers {self.scorers!r}: use {', '.join(SCORERS)} joined by '+'")
        if self.external and "cb" not in names:
            raise BenchError("MOODCAT external negatives only train C_b; add 'cb' to scorers")
        return names

    def fit(self, ctx: FitContext) -> "MOODCAT":
        variant = generator_variant(self.mask, self.conditional)
        self.test_mask_ = self.test_mask or variant.mask
        mask_ratios(self.test_mask_, training=False)
        self.classifier_ = ctx.models["classifier"].eval()
        self.generator_model_ = ctx.models[variant.kind].eval()
        self.metrics_ = {}
        for name in self._scorer_names():
            if name == "cb":
                self.metrics_[name] = ctx.models[pair_classifier_kind(variant, self.external)].eval()
                continue
            metric, why = load_iqa(name, self.iqa_weights)
            if metric is None:
                log.warning("MOODCAT: %s; scoring without %s", why, name)
                continue
            self.metrics_[name] = metric.to(ctx.device)
        if not self.metrics_:
            raise BenchError(f"MOODCAT has no scorer left of {self.scorers!r}; give iqa_weights or use scorers=cb")
        self.mask_seed_ = ctx.seed
        if ctx.validation is None:
            raise BenchError(f"MOODCAT calibrates its scores on ID validation images; task {ctx.task.name} has no "
                             "validation split (its protocol sets id_validation=None)")
        calibration = to_float(ctx.validation.images.to(ctx.device))
        raw = [self._raw_scores(chunk)[0] for chunk in calibration.split(1000)]
        self.reference_ = {name: torch.cat([r[name] for r in raw]).sort().values for name in self.metrics_}
        return self

    @torch.no_grad()
    def _raw_scores(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each scorer's ID score for images in [0, 1], and the ID classifier's labels they used.

        Masks come from a generator re-seeded on every call, so an image's score does not depend
        on what was scored before it.
        """
        labels = self.classifier_(x).argmax(dim=1)
        masks = torch.Generator().manual_seed(self.mask_seed_)
        signed = x * 2 - 1
        synthesis = synthesize(self.generator_model_, signed, labels, self.test_mask_, masks)
        scores = {}
        for name, metric in self.metrics_.items():
            if name == "cb":
                scores[name] = metric(signed, synthesis, labels)
            else:
                scores[name] = -metric(_vgg_input(x), _vgg_input((synthesis + 1) / 2))
        return {name: score.float().cpu() for name, score in scores.items()}, labels

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        raw, labels = self._raw_scores(x)
        percentiles = {name: calibrated(raw[name], self.reference_[name]) for name in raw}
        return Prediction(cascade(percentiles).float().to(x.device), labels)


register_method("moodcat", MOODCAT)
