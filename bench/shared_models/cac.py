"""CAC, Class Anchor Clustering: Miller, Sünderhauf, Milford & Dayoub, "Class Anchor Clustering:
a Loss for Distance-based Open Set Recognition", WACV 2021 (github.com/dimitymiller/cac-openset).

The network is the usual backbone + MLP head; its K outputs z are the "logit space" in which
class c has a fixed anchor alpha * e_c (alpha = 10). With d_c = ||z - alpha e_c||_2 (Euclidean,
not squared), the loss of an image of class y is

    tuplet + lambda * anchor = log(1 + sum_{j != y} exp(d_y - d_j)) + lambda * d_y,   lambda = 0.1,

averaged over the batch (`networks/openSetClassifier.py` `distance_classifier`, `CACLoss` in
`train_cacOpenset.py`). The tuplet term is the cross-entropy of the logits -d. The network meets
the contract, so the native score (`methods/cac.py`), every post-hoc score (`energy[net=cac]`)
and CMG (`cac+cmg_e`) read it.

Not carried over from the reference: its encoder (the harness's backbones and MLP head instead,
as for the classifier), its input normalisation, its resize of 28x28 digits to 32x32 and its
RandomResizedCrop/rotation augmentation (crop+flip only where the dataset asks, as for the
classifier), its weight initialisation, and its choice of the epoch with the lowest anchor loss
on a validation split (the last epoch here; choosing it on the task's ID validation split is not built).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from bench.augment import training_input
from bench.nets.backbones import Classifier, build_backbone
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs


@dataclass(frozen=True)
class CACRecipe:
    stage: Stage
    low_lr: Stage | None = None  # a second run at a lower lr with a fresh optimiser, as the reference resumes
    alpha: float = 10.0  # anchor magnitude
    lam: float = 0.1  # weight of the anchor term

    def __post_init__(self):
        require(self, positive=("alpha",), non_negative=("lam",))


# paper: the CMG paper's backbones with CAC's `openset_training` settings (`datasets/config.json`):
# SGD momentum 0.9, batch 128; MNIST lr 0.01, weight decay 5e-6, 35 epochs; CIFAR-10 lr 0.01 for
# 150 epochs, then lr 0.001 for 50 more, weight decay 5e-6 (CIFAR+10 uses 5e-4 and TinyImageNet
# 1e-3 for 500 + 300 epochs: one colour entry here, CIFAR-10's). smoke and demo: the
# classifier's stages, so the two networks differ only in their loss.
_SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-6)
RECIPES = RecipeTable("cac", {
    ("gray28", "smoke"): CACRecipe(Stage("cnn4", 8, 4, 64, 2e-3)),
    ("gray28", "demo"): CACRecipe(Stage("cnn4", 16, 3, 128, 1e-3)),
    ("gray28", "paper"): CACRecipe(Stage("cnn9", None, 35, 128, 0.01, **_SGD)),
    ("colour", "smoke"): CACRecipe(Stage("cnn4", 8, 4, 64, 2e-3)),
    ("colour", "demo"): CACRecipe(Stage("cnn4", 32, 10, 128, 1e-3)),
    ("colour", "paper"): CACRecipe(Stage("resnet18", None, 150, 128, 0.01, **_SGD),
                                   Stage("resnet18", None, 50, 128, 0.001, **_SGD)),
})


def recipe_part(recipe) -> CACRecipe:
    """This recipe's entry; crop+flip where the dataset asks for it (CIFAR), as for the classifier."""
    part = recipe.pick(RECIPES)
    low_lr = replace(part.low_lr, augment=recipe.augment) if part.low_lr is not None else None
    return replace(part, stage=replace(part.stage, augment=recipe.augment), low_lr=low_lr)


def anchor_distances(outputs: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, K) Euclidean distances from each row of `outputs` (B, D) to each row of `centres` (K, D)."""
    return (outputs[:, None, :] - centres[None, :, :].to(outputs.dtype)).norm(dim=2)


def anchors(num_classes: int, alpha: float) -> torch.Tensor:
    """The fixed class anchors alpha * e_c, one row per class."""
    return alpha * torch.eye(num_classes)


def cac_loss(outputs: torch.Tensor, labels: torch.Tensor, alpha: float = 10.0, lam: float = 0.1) -> torch.Tensor:
    """Mean over the batch of log(1 + sum_{j != y} exp(d_y - d_j)) + lam * d_y, d to the anchors alpha e_c."""
    distances = anchor_distances(outputs, anchors(outputs.shape[1], alpha).to(outputs.device))
    tuplet = F.cross_entropy(-distances, labels)  # -log softmax(-d)_y = log sum_j exp(d_y - d_j), j = y gives the 1
    anchor = distances.gather(1, labels[:, None]).mean()
    return tuplet + lam * anchor


def build(task, recipe):
    channels, size, _ = task.image_shape
    stage = recipe_part(recipe).stage
    return Classifier(build_backbone(stage.arch, channels, size, stage.width), task.num_classes)


def train(model, inputs: TrainInputs):
    part = recipe_part(inputs.recipe)

    def loss(net, x, y):
        return cac_loss(net(x), y, part.alpha, part.lam)

    for stage in (part.stage, part.low_lr):
        if stage is not None:
            model = inputs.fit(model, stage, loss, training_input(stage.augment), "cac")
    return model


register_shared_model(SharedModel(
    kind="cac",
    description="CAC: backbone + MLP head trained with the class-anchor loss (anchors alpha*e_c in logit space)",
    build=build,
    train=train,
    recipe_part=recipe_part,
    network=True,
))
