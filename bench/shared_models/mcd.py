"""MCD, maximum classifier discrepancy: Yu & Aizawa, "Unsupervised Out-of-Distribution Detection by
Maximum Classifier Discrepancy", ICCV 2019; reference code: OpenOOD (github.com/Jingkang50/OpenOOD,
`openood/trainers/mcd_trainer.py`, `networks/mcd_net.py`, `postprocessors/mcd_postprocessor.py`).

One feature extractor (the harness's backbone) carries two classifier heads F1 and F2 (each the
harness's MLP head). With p_i = softmax(F_i(x)) and H(p) = -sum_c p_c log p_c, the entropy over
the K classes of one image, every step minimises

    CE(F1(x), y) + CE(F2(x), y)                                         on a labelled ID batch,
  + lambda * max(0, m - mean_{u in U} [H(p1(u)) - H(p2(u))])            on an auxiliary batch U,

the second term only after `pretrain_epochs` epochs of the first alone (OpenOOD's
`start_epoch_ft`); m = 1.2, lambda = 1. The hinge pushes F1 toward uncertain and F2 toward
confident predictions off the ID data, so their disagreement marks it, while both still classify
ID images. The score (`methods/mcd.py`) is minus the L1 distance between the two softmaxes. The
network meets the contract through F1 (`final_layer` is F1's last layer, `forward_features` gives
F1's logits and hidden layer), so every post-hoc score (`energy[net=mcd]`) and CMG (`mcd+cmg_e`)
read F1; the native score reads both heads.

Two bugs in OpenOOD's trainer are not carried over: its `entropy` takes the softmax and the sum
over dim 0, the batch, so it returns one "entropy" per class over the images instead of one per
image over the classes; and `torch.max(margin - ent, 0)[0]` on the 0-dimensional mean is that
value itself, so its loss has no hinge at 0. Here the entropy is over classes and the hinge is
applied (the paper's loss, which takes the hinge of the batch mean).

Not carried over from the reference either: its backbones and their linear heads (the harness's
backbones with two MLP heads; cnn9 / resnet18 at paper scale); SGD with Nesterov momentum (plain
momentum here: the harness's optimiser has no Nesterov switch) and a cosine floor of 1e-6
(cosine to 0 here); separate forward passes for the ID and the auxiliary batch (one pass over
both here, so batch norm normalises them together, as Outlier Exposure's code does, and its
running statistics are not updated by outliers alone); the paper's unlabelled set mixes ID and
OOD images, the task's auxiliary set here holds outliers only. Crop+flip, where the dataset asks
for it, is applied to the auxiliary images too. As in the reference, the model at the end of
the schedule is used.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bench.augment import training_input
from bench.errors import BenchError
from bench.nets.backbones import Classifier, build_backbone
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, make_optimizer, shuffled_batches

log = logging.getLogger(__name__)


class TwoHeadClassifier(Classifier):
    """The harness's Classifier (backbone + MLP head F1) with a second MLP head F2 on the same features.

    The network contract is F1's: `forward`, `forward_features` and `final_layer` read F1 only.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int = 512):
        super().__init__(backbone, num_classes, hidden)
        self.second_head = nn.Sequential(nn.Linear(backbone.out_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def both_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F1 logits, F2 logits) from one pass of the backbone."""
        features = self.backbone(x)
        return self.head(features), self.second_head(features)


@dataclass(frozen=True)
class MCDRecipe:
    stage: Stage  # backbone, total epochs (both phases), ID batch, optimiser; one lr schedule over all epochs
    pretrain_epochs: int  # epochs of cross-entropy alone before the discrepancy term starts
    aux_batch_size: int  # auxiliary images per step in the second phase
    margin: float = 1.2  # m
    weight: float = 1.0  # lambda

    def __post_init__(self):
        require(self, positive=("aux_batch_size", "margin"), non_negative=("pretrain_epochs", "weight"))
        if self.pretrain_epochs >= self.stage.epochs:
            raise ValueError(f"pretrain_epochs must be below stage.epochs ({self.stage.epochs}), or the discrepancy "
                             f"term never trains (got {self.pretrain_epochs})")


# paper: OpenOOD's MCD settings (`configs/pipelines/train/baseline.yml`, `train_mcd.yml`, CIFAR-10's
# dataset configs): SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine decay per step over 100
# epochs, the discrepancy term from epoch 90 on, m = 1.2, lambda = 1, ID batch 128, auxiliary
# batch 200; on the CMG paper's backbones (OpenOOD has no MCD entry for 28x28 digits, so gray28
# takes the same). smoke and demo: the classifier's backbones, epochs and Adam learning rates,
# the discrepancy term in the last epoch only (colour demo: 1 of 10, the reference's share) and
# an auxiliary batch as large as the ID batch (cost).
_SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, cosine=True)
RECIPES = RecipeTable("mcd", {
    ("gray28", "smoke"): MCDRecipe(Stage("cnn4", 8, 4, 64, 2e-3), pretrain_epochs=3, aux_batch_size=64),
    ("gray28", "demo"): MCDRecipe(Stage("cnn4", 16, 3, 128, 1e-3), pretrain_epochs=2, aux_batch_size=128),
    ("gray28", "paper"): MCDRecipe(Stage("cnn9", None, 100, 128, 0.1, **_SGD), pretrain_epochs=90,
                                   aux_batch_size=200),
    ("colour", "smoke"): MCDRecipe(Stage("cnn4", 8, 4, 64, 2e-3), pretrain_epochs=3, aux_batch_size=64),
    ("colour", "demo"): MCDRecipe(Stage("cnn4", 32, 10, 128, 1e-3), pretrain_epochs=9, aux_batch_size=128),
    ("colour", "paper"): MCDRecipe(Stage("resnet18", None, 100, 128, 0.1, **_SGD), pretrain_epochs=90,
                                   aux_batch_size=200),
})


def recipe_part(recipe) -> MCDRecipe:
    """This recipe's entry; crop+flip where the dataset asks for it (CIFAR), as for the classifier."""
    part = recipe.pick(RECIPES)
    return replace(part, stage=replace(part.stage, augment=recipe.augment))


def class_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B,) entropy of each image's softmax over its K classes (dim 1), not over the batch."""
    log_probs = F.log_softmax(logits, dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)


def discrepancy_loss(logits1: torch.Tensor, logits2: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, m - mean over the batch of H(p1) - H(p2)): F1 uncertain, F2 confident, by at least m nats."""
    return F.relu(margin - (class_entropy(logits1) - class_entropy(logits2)).mean())


def build(task, recipe):
    channels, size, _ = task.image_shape
    stage = recipe_part(recipe).stage
    return TwoHeadClassifier(build_backbone(stage.arch, channels, size, stage.width), task.num_classes)


def _endless_batches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Index batches of the auxiliary set, reshuffled each time it is used up (it may be smaller than the ID set)."""
    while True:
        yield from shuffled_batches(n, batch_size, generator, device)


def train(model: TwoHeadClassifier, inputs: TrainInputs) -> TwoHeadClassifier:
    if inputs.extra is None:
        raise BenchError(f"mcd trains on auxiliary outlier images and task {inputs.task.name} has none; "
                         "give a set with --aux NAME")
    part = recipe_part(inputs.recipe)
    stage = part.stage
    images, labels = inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device)
    aux = inputs.extra.images.to(inputs.device)
    transform = training_input(stage.augment)
    steps = math.ceil(len(images) / stage.batch_size)
    optimiser, schedule = make_optimizer(model.parameters(), stage, steps)
    aux_batches = _endless_batches(len(aux), part.aux_batch_size, inputs.generator, inputs.device)

    model.train()
    for epoch in range(stage.epochs):
        discrepancy = epoch >= part.pretrain_epochs
        totals, batches = {"ce": 0.0, "hinge": 0.0}, 0
        for index in shuffled_batches(len(images), stage.batch_size, inputs.generator, inputs.device):
            x, y = transform(images[index]), labels[index]
            if discrepancy:  # one pass over ID and auxiliary images, so batch norm sees them together
                x = torch.cat([x, transform(aux[next(aux_batches)])])
            logits1, logits2 = model.both_heads(x)
            ce = F.cross_entropy(logits1[:len(y)], y) + F.cross_entropy(logits2[:len(y)], y)
            hinge = (discrepancy_loss(logits1[len(y):], logits2[len(y):], part.margin) if discrepancy
                     else ce.new_zeros(()))
            optimiser.zero_grad(set_to_none=True)
            (ce + part.weight * hinge).backward()
            optimiser.step()
            schedule.step()
            batches += 1
            totals["ce"] += float(ce.detach())
            totals["hinge"] += float(hinge.detach())
        log.info("mcd[%s] epoch %d/%d %s", inputs.task.name, epoch + 1, stage.epochs,
                 " ".join(f"{name} {value / max(batches, 1):.4f}" for name, value in totals.items()))
    return model.eval()


register_shared_model(SharedModel(
    kind="mcd",
    description="MCD: backbone + two MLP heads, cross-entropy on both, then an entropy-discrepancy hinge on aux data",
    build=build,
    train=train,
    recipe_part=recipe_part,
    network=True,
    aux=True,
))
