"""SupCLR (Khosla et al., NeurIPS 2020, "Supervised Contrastive Learning"), as the CMG paper ran it:
CSI's `sup_simclr` mode (github.com/alinlab/CSI, `training/sup/sup_simclr.py`, `sup_linear.py`).

Step 1: the encoder and a projector are trained with the SupCon loss (temperature 0.07) on
two SimCLR-augmented views of each image (a horizontal flip, then resized crop and colour
jitter). Step 2: a linear classifier is trained with cross-entropy on the frozen encoder.
The network meets the contract (`forward_features`, `final_layer` = that linear classifier),
so SupCLR's own score (MSP, `methods/supclr.py`), every post-hoc score and +CMG-e read it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.contrastive import augment, simclr_transform, supcon_loss
from bench.nets.contrastive import ContrastiveNet
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, map_batches, to_float, train_epochs


@dataclass(frozen=True)
class SupCLRRecipe:
    pretrain: Stage  # SupCon on two augmented views
    linear: Stage  # the linear classifier on the frozen encoder; augment=False: on features computed once
    temperature: float = 0.07
    projection: int = 128

    def __post_init__(self):
        require(self, positive=("temperature", "projection"))


# paper: the CMG paper's backbones with CSI's sup_simclr recipe: 700 epochs, total batch 512,
# LARS lr 0.1 with 10 warm-up epochs and cosine decay, weight decay 1e-6 (SGD here: torch has
# no LARS); linear step 100 epochs, SGD lr 0.1, batch 32 with augmentation (the code steps the
# lr down at 60/75/90%: cosine here). demo: cnn4 16 with Adam, a few minutes per Fashion-MNIST
# partition on one core; the linear step on features computed once.
RECIPES = RecipeTable("supclr", {
    ("gray28", "smoke"): SupCLRRecipe(Stage("cnn4", 8, 2, 128, 1e-3), Stage(None, None, 5, 128, 1e-2)),
    ("gray28", "demo"): SupCLRRecipe(Stage("cnn4", 16, 6, 256, 1e-3), Stage(None, None, 10, 256, 1e-2)),
    ("gray28", "paper"): SupCLRRecipe(
        Stage("cnn9", None, 700, 512, 0.1, optimizer="sgd", weight_decay=1e-6, warmup_epochs=10, cosine=True),
        Stage(None, None, 100, 32, 0.1, augment=True, optimizer="sgd", momentum=0.0, weight_decay=1e-6,
              cosine=True)),
    ("colour", "smoke"): SupCLRRecipe(Stage("cnn4", 8, 2, 128, 1e-3), Stage(None, None, 5, 128, 1e-2)),
    ("colour", "demo"): SupCLRRecipe(Stage("cnn4", 32, 20, 256, 1e-3), Stage(None, None, 10, 256, 1e-2)),
    ("colour", "paper"): SupCLRRecipe(
        Stage("resnet18", None, 700, 512, 0.1, optimizer="sgd", weight_decay=1e-6, warmup_epochs=10, cosine=True),
        Stage(None, None, 100, 32, 0.1, augment=True, optimizer="sgd", momentum=0.0, weight_decay=1e-6,
              cosine=True)),
})


def build(task, recipe):
    channels, size, _ = task.image_shape
    part = recipe.pick(RECIPES)
    return ContrastiveNet(part.pretrain.arch, channels, size, part.pretrain.width, task.num_classes, part.projection)


def two_views(images: torch.Tensor, transform) -> torch.Tensor:
    """2B augmented views of B float images: each image flipped at random, then SimCLR-augmented twice."""
    return augment(torch.cat([images, images]), transform)


def train_linear(net: ContrastiveNet, inputs: TrainInputs, stage: Stage, transform) -> None:
    """Cross-entropy on the frozen encoder: only `net.classifier` learns, batch norm statistics stay."""
    net.requires_grad_(False).eval()
    net.classifier.requires_grad_(True)
    if stage.augment:
        def loss(model, x, y):
            model.backbone.eval()
            with torch.no_grad():
                features = model.backbone(augment(x, transform))
            return F.cross_entropy(model.classifier(features), y)

        train_epochs(net, inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device), loss,
                     stage=stage, generator=inputs.generator, transform=to_float, name=f"linear[{inputs.task.name}]")
    else:
        features = map_batches(net.backbone, inputs.train.images.to(inputs.device), transform=to_float)
        train_epochs(net.classifier, features, inputs.train.labels.to(inputs.device),
                     lambda head, x, y: F.cross_entropy(head(x), y), stage=stage, generator=inputs.generator,
                     name=f"linear[{inputs.task.name}]")
    net.requires_grad_(True)


def train(net: ContrastiveNet, inputs: TrainInputs) -> ContrastiveNet:
    part = inputs.recipe.pick(RECIPES)
    channels, size, _ = inputs.task.image_shape
    transform = simclr_transform(channels, size)

    def supcon(model, x, y):
        views = two_views(x, transform)
        return supcon_loss(model.projector(model.backbone(views)), torch.cat([y, y]), part.temperature)

    net.classifier.requires_grad_(False)
    inputs.fit(net, part.pretrain, supcon, to_float, "supclr")
    train_linear(net, inputs, part.linear, transform)
    return net.eval()


register_shared_model(SharedModel(
    kind="supclr",
    description="SupCLR: encoder trained with SupCon on two SimCLR views, then a linear classifier on it",
    build=build,
    train=train,
    recipe_part=lambda recipe: recipe.pick(RECIPES),
    network=True,
))
