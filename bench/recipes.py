"""Training recipes at three scales, chosen by image shape.

- smoke: seconds on a CPU, for tests (subsets of the data, one epoch);
- small: a whole Fashion-MNIST Setting 1 run in minutes on 2 CPU cores;
- paper: the CMG paper's backbones and schedules (SPEC.md section 3) and MOODCAT's widths
  and optimisers (SPEC.md section 4), for GPUs.

A recipe is part of every cache key, so changing one retrains what depends on it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from bench.errors import BenchError

SCALES = ("smoke", "small", "paper")


@dataclass(frozen=True)
class StageOne:
    """How a shared network (classifier or CVAE) is trained on the ID training set."""

    arch: str
    width: int | None
    epochs: int
    batch_size: int
    lr: float
    augment: bool = False


@dataclass(frozen=True)
class GanStage:
    """How MOODCAT's generator (encoder + decoder) is trained against its U-Net discriminator."""

    width: int  # channel multiplier of encoder and decoder (32 in the released code)
    disc_width: int  # channel multiplier of the discriminator (32)
    epochs: int
    batch_size: int  # 96 in the paper
    g_lr: float  # encoder + decoder, Adam betas (0, 0.999); 5e-5 in the code
    d_lr: float  # discriminator; 2e-4 in the code
    cutmix_rampup: float  # epochs over which the CutMix probability rises from 0 to 0.5 (200)
    max_images: int | None = None  # images per epoch (None: all); keeps the smoke scale at seconds


@dataclass(frozen=True)
class PairStage:
    """How MOODCAT's conditional binary classifier C_b is trained (its code is not released)."""

    width: int  # 64 channels in the released network
    epochs: int
    batch_size: int
    lr: float
    max_images: int | None = None


@dataclass(frozen=True)
class MoodcatRecipe:
    generator: GanStage
    pair_classifier: PairStage
    holdout: float  # fraction of ID training images kept out of both, for calibrating the scores


@dataclass(frozen=True)
class Recipe:
    scale: str
    classifier: StageOne
    cvae: StageOne
    finetune_epochs: int
    finetune_lr: float
    finetune_batch: int
    train_limit: int | None
    test_limit: int | None
    moodcat: MoodcatRecipe | None = None

    def describe(self) -> dict:
        return asdict(self)


def _recipe(scale, classifier, cvae, finetune_epochs=10, train_limit=None, test_limit=None) -> Recipe:
    return Recipe(scale, classifier, cvae, finetune_epochs=finetune_epochs, finetune_lr=1e-4,
                  finetune_batch=128, train_limit=train_limit, test_limit=test_limit,
                  moodcat=MOODCAT_RECIPES[scale])


# MOODCAT per scale. paper: the released code's widths (32 / 32 / 64), batch 96 and learning
# rates; its epoch counts are not given (SPEC.md only says CutMix ramps up over 200 epochs),
# so 400 generator epochs and C_b's whole schedule are our choice. small: width 4 (C_b 8),
# 16,000 images (250 batches) each, lr 2e-4 for G (5e-5 learns too little in so few steps):
# a few minutes per Fashion-MNIST partition on one core; smoke: a few batches.
MOODCAT_RECIPES = {
    "smoke": MoodcatRecipe(GanStage(4, 4, 1, 64, 2e-4, 2e-4, cutmix_rampup=1, max_images=384),
                           PairStage(8, 1, 64, 2e-4, max_images=384), holdout=0.1),
    "small": MoodcatRecipe(GanStage(4, 4, 1, 64, 2e-4, 2e-4, cutmix_rampup=1, max_images=16000),
                           PairStage(8, 1, 64, 2e-4, max_images=16000), holdout=0.1),
    "paper": MoodcatRecipe(GanStage(32, 32, 400, 96, 5e-5, 2e-4, cutmix_rampup=200), PairStage(64, 20, 96, 2e-4),
                           holdout=0.1),
}


# Keyed by (image family, scale). Stage 2 always uses Adam 1e-4 with 128 ID + 128 pseudo-OOD
# per batch (SPEC.md section 3); the paper's 10 fine-tuning epochs are cheap on frozen features.
RECIPES = {
    ("gray28", "smoke"): _recipe("smoke", StageOne("cnn4", 8, 4, 64, 2e-3), StageOne("conv", 8, 2, 64, 1e-3),
                                 finetune_epochs=1, train_limit=2000, test_limit=600),
    ("gray28", "small"): _recipe("small", StageOne("cnn4", 16, 3, 128, 1e-3), StageOne("conv", 16, 2, 128, 1e-3)),
    # The released code trains the MNIST classifier and CVAE for 100 epochs.
    ("gray28", "paper"): _recipe("paper", StageOne("cnn9", None, 100, 512, 1e-3), StageOne("conv", None, 100, 512, 1e-3)),
    ("colour", "smoke"): _recipe("smoke", StageOne("cnn4", 8, 4, 64, 2e-3), StageOne("conv", 8, 2, 64, 1e-3),
                                 finetune_epochs=1, train_limit=2000, test_limit=600),
    ("colour", "small"): _recipe("small", StageOne("cnn4", 32, 10, 128, 1e-3), StageOne("conv", 32, 10, 128, 1e-3)),
    ("colour", "paper"): _recipe("paper", StageOne("resnet18", None, 200, 512, 1e-3),
                                 StageOne("resnet", None, 200, 512, 1e-3)),
}


def recipe_for(scale: str, image_shape: tuple[int, int, int], augment: bool = False) -> Recipe:
    """The recipe for a dataset of `image_shape`; `augment` turns on crop+flip for the classifier."""
    if scale not in SCALES:
        raise BenchError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    channels, height, _ = image_shape
    family = "gray28" if channels == 1 and height <= 28 else "colour"
    recipe = RECIPES[family, scale]
    if augment:
        recipe = replace(recipe, classifier=replace(recipe.classifier, augment=True))
    return recipe
