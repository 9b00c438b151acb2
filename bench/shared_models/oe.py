"""OE, Outlier Exposure: Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier
Exposure", ICLR 2019 (github.com/hendrycks/outlier-exposure).

The cross-entropy ID classifier (`bench/shared_models/classifier.py`) is fine-tuned on ID batches
together with batches of the task's auxiliary outliers (`Task.extra_train`, `--aux`), twice as
many outliers as ID images per batch. With logits z, K classes, n ID images (labels y) and m
outliers, the loss of a batch is

    (1/n) sum_i -log softmax(z_i)_{y_i}  +  0.5 * (1/m) sum_j [logsumexp_c z_jc - (1/K) sum_c z_jc],

the second term being the cross-entropy from the softmax to the uniform distribution (its minimum
is log K, at uniform outputs), as the reference's `oe_tune.py` writes it. ID and outlier images go
through the network in ONE forward pass, so batch norm normalises them with the statistics of the
mixed batch and keeps running statistics of it, as the reference does; two passes would normalise
each part with its own statistics (a known bug of one port). The score is the maximum softmax
probability (`methods/oe.py`); the network is the classifier's, so it meets the network contract
and every post-hoc score (`energy[net=oe]`) and CMG (`oe+cmg_e`) read it.

Fine-tuning, not training from scratch: the reference offers both (`oe_tune.py`, `oe_scratch.py`)
and its README presents OE as fine-tuning a trained classifier. Here the classifier is already
trained and cached for every post-hoc baseline, so OE costs only its own few epochs, and the OE
network differs from the baseline's only by OE's fine-tuning (which also continues the ID
cross-entropy, so compare accuracies beside AUROCs). The reference's tuning settings:
SGD, momentum 0.9 (Nesterov), cosine decay of the learning rate per step; MNIST 5 epochs at lr 0.01,
batch 50 + 100 outliers, no weight decay; CIFAR 10 epochs at lr 0.001, batch 128 + 256 outliers,
weight decay 5e-4, crop+flip on ID and outlier images alike.

Demo cost, measured on a shared 2-core CPU with `--cpus-per-trial 1`: far_fmnist (54,000 ID
training images, 10,000 patches) fine-tunes for 2 epochs in 169 s after the classifier's 84 s;
the whole `bench run --methods oe` takes 4 min 42 s.

Not carried over from the reference: its networks (the harness's classifier, as trained by its own
recipe, instead of the reference's baseline ConvNet / WRN-40-2 trained with SGD); its outlier set
(80 Million Tiny Images; here the task's auxiliary set, by default `natural_patches`); its
outlier stream (a window of the 80M images read in order from a random offset, the epoch ending
with the ID loader; here the auxiliary set, much smaller than 2x the ID set, is reshuffled and
cycled so that each epoch still sees every ID image); Nesterov momentum (the harness's SGD has
none) and the cosine floor of 1e-6 (the harness decays to 0); input normalisation by dataset
mean/std (inputs are [0, 1] here); the MNIST outliers' random flips (`natural_patches` are
flipped when cut). Like the reference, the model at the end of the schedule is used.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from bench.augment import training_input
from bench.recipes import RecipeTable, require
from bench.shared import SharedModel, register_shared_model
from bench.shared_models import classifier
from bench.training import TrainInputs, make_optimizer, shuffled_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OERecipe:
    """The fine-tuning run; the network and its starting weights are the classifier's."""

    epochs: int
    batch_size: int  # ID images per batch
    lr: float
    weight_decay: float = 0.0
    aux_ratio: int = 2  # outliers per ID image in a batch (the reference: 2)
    weight: float = 0.5  # of the cross-entropy to uniform on outliers
    optimizer: str = "sgd"
    momentum: float = 0.9
    cosine: bool = True  # cosine decay of the lr per step, to 0
    augment: bool = False  # crop + flip on ID and outlier images (the dataset's choice)

    def __post_init__(self):
        require(self, positive=("epochs", "batch_size", "lr", "aux_ratio"),
                non_negative=("weight_decay", "weight", "momentum"), choices={"optimizer": ("adam", "sgd")})


# paper: the reference's `oe_tune.py` (MNIST's for gray28, CIFAR's for colour; see the module
# docstring), fine-tuning the classifier's paper network. smoke and demo: the same optimiser and
# learning rates with the demo batch of 128 and 2 epochs, each of which costs about three classifier
# epochs (every batch carries twice as many outliers as ID images).
RECIPES = RecipeTable("oe", {
    ("gray28", "smoke"): OERecipe(2, 64, 0.01),
    ("gray28", "demo"): OERecipe(2, 128, 0.01),
    ("gray28", "paper"): OERecipe(5, 50, 0.01),
    ("colour", "smoke"): OERecipe(2, 64, 0.001, weight_decay=5e-4),
    ("colour", "demo"): OERecipe(2, 128, 0.001, weight_decay=5e-4),
    ("colour", "paper"): OERecipe(10, 128, 0.001, weight_decay=5e-4),
})


def recipe_part(recipe) -> OERecipe:
    """This recipe's entry; crop+flip where the dataset asks for it (CIFAR), as for the classifier."""
    return recipe.pick(RECIPES, augment=recipe.augment)


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cross-entropy from softmax(logits) to uniform: logsumexp(z) - mean_c z_c."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


def oe_loss(logits: torch.Tensor, labels: torch.Tensor, weight: float = 0.5) -> tuple[torch.Tensor, ...]:
    """(loss, ce, uniform): CE on the first len(labels) rows (ID), the cross-entropy to uniform on the rest
    (outliers), and loss = ce + weight * uniform."""
    ce = F.cross_entropy(logits[:len(labels)], labels)
    uniform = uniform_cross_entropy(logits[len(labels):])
    return ce + weight * uniform, ce, uniform


def outlier_batches(count: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Endless index batches of `batch_size` over `count` outliers: shuffled passes, one after another."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(count, generator=generator)])
        batch, pending = pending[:batch_size], pending[batch_size:]
        yield batch.to(device)


def train(model, inputs: TrainInputs):
    part = recipe_part(inputs.recipe)
    model.load_state_dict(inputs.dependencies["classifier"].state_dict())
    images, labels = inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device)
    outliers = inputs.extra.images.to(inputs.device)
    transform = training_input(part.augment)
    steps = math.ceil(len(images) / part.batch_size)
    optimiser, schedule = make_optimizer(model.parameters(), part, steps)
    stream = outlier_batches(len(outliers), part.aux_ratio * part.batch_size, inputs.generator, inputs.device)
    model.train()
    for epoch in range(part.epochs):
        ce_total, uniform_total = 0.0, 0.0
        for index in shuffled_batches(len(images), part.batch_size, inputs.generator, inputs.device):
            logits = model(transform(torch.cat([images[index], outliers[next(stream)]])))  # one pass: shared BN
            loss, ce, uniform = oe_loss(logits, labels[index], part.weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            ce_total, uniform_total = ce_total + float(ce.detach()), uniform_total + float(uniform.detach())
        log.info("oe[%s] epoch %d/%d ce %.4f uniform-ce %.4f", inputs.task.name, epoch + 1, part.epochs,
                 ce_total / steps, uniform_total / steps)
    return model.eval()


register_shared_model(SharedModel(
    kind="oe",
    description="OE: the ID classifier fine-tuned with cross-entropy to uniform on auxiliary outliers",
    build=classifier.build,
    train=train,
    recipe_part=recipe_part,
    requires=("classifier",),
    network=True,
    aux=True,
))
