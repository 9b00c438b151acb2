"""SupCSI, the labelled variant of CSI (Tack, Mo, Jeong & Shin, "CSI: Novelty Detection via
Contrastive Learning on Distributionally Shifted Instances", NeurIPS 2020), as its code trains
it: modes `sup_simclr_CSI` then `sup_CSI_linear` of github.com/alinlab/CSI
(`training/sup/sup_simclr_CSI.py`, `training/sup/sup_CSI_linear.py`, `models/base_model.py`).

Shifts are the 4 rotations: rotation k (k = 0..3) is `torch.rot90(x, k, dims=(2, 3))`, its
shift label is k and the joint (class, rotation) label of an image of class y is y + K*k
(K known classes), CSI's convention.

Step 1 (representation): every training image gives 2 views x 4 rotations = 8 samples, each
with its own SimCLR draw (resized crop 0.08-1, flip, colour jitter); the encoder and projector
minimise the SupCon loss (temperature 0.07) with the joint labels, so the other view of the
same image and every sample of the same class *and* rotation are positives, and the other
rotations of the same image are negatives. (CSI flips, rotates, then crops and jitters; here the
SimCLR transform comes first and the rotation last. For square images the two give the same
distribution, and the flip then never turns rotation k into rotation 4-k.)
Step 2 (heads on the frozen encoder): three linear heads trained with cross-entropy, as
`sup_CSI_linear` does: the classifier on rotation 0 only (the network contract's final
layer), the shift head (4 rotations) and the joint head (4K outputs) on all 4 rotations.
The score that reads them is `methods/csi.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.contrastive import augment, simclr_transform, supcon_loss
from bench.nets.contrastive import ContrastiveNet
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, map_batches, to_float, train_epochs

ROTATIONS = 4


@dataclass(frozen=True)
class CSIRecipe:
    pretrain: Stage  # step 1: SupCon on 2 views x 4 rotations; batch_size counts training images (8 samples each)
    heads: Stage  # step 2: the three linear heads on the frozen encoder; augment=False: on features computed once
    temperature: float = 0.07
    projection: int = 128

    def __post_init__(self):
        require(self, positive=("temperature", "projection"))


# paper: the CMG paper's backbones with CSI's sup_simclr_CSI / sup_CSI_linear recipe. Step 1:
# 700 epochs, 32 images per GPU x 4 GPUs = 128 images per step (512 rotated, 1024 views), LARS
# lr 0.1, weight decay 1e-6, 10 warm-up epochs then cosine; SGD with momentum 0.9 here (torch
# has no LARS) with the same lr, warm-up, cosine and weight decay. (CSI's warm-up scheduler has
# multiplier 10: it ramps LARS's lr from 0.1 to 1.0; that peak belongs to LARS's trust-ratio
# scaled steps, and plain SGD keeps 0.1, as SupCLR's recipe does.) Step 2: 100 epochs, batch 32,
# SGD lr 0.1 without momentum, weight decay 1e-6, augmented inputs (flip, rotations, SimCLR);
# CSI steps the lr down x0.1 at 60/75/90%, cosine here. Cost on one H100 (cnn9, a Fashion-MNIST
# partition): 153 s an epoch of step 1 and 69 s of step 2, mostly the per-image augmentation:
# about 32 hours in all.
# demo: cnn4 with Adam; each image costs 8 forward/backward passes and 8 per-image SimCLR draws,
# so an epoch costs about 4 of SupCLR's: 28x28 gray, width 16, 4 epochs, 80-110 s an epoch on one
# core for a 36k-image Fashion-MNIST partition (the per-image augmentation is a third of it);
# colour, width 32, 5 epochs (as much as SupCLR's 20). Heads: 10 epochs on features computed once.
# smoke: seconds on the 2000-image smoke subset; the heads need 30 epochs there to pass 50% accuracy.
RECIPES = RecipeTable("csi", {
    ("gray28", "smoke"): CSIRecipe(Stage("cnn4", 16, 1, 64, 2e-3), Stage(None, None, 30, 128, 1e-2)),
    ("gray28", "demo"): CSIRecipe(Stage("cnn4", 16, 4, 128, 1e-3), Stage(None, None, 10, 256, 1e-2)),
    ("gray28", "paper"): CSIRecipe(
        Stage("cnn9", None, 700, 128, 0.1, optimizer="sgd", weight_decay=1e-6, warmup_epochs=10, cosine=True),
        Stage(None, None, 100, 32, 0.1, augment=True, optimizer="sgd", momentum=0.0, weight_decay=1e-6,
              cosine=True)),
    ("colour", "smoke"): CSIRecipe(Stage("cnn4", 16, 1, 64, 2e-3), Stage(None, None, 30, 128, 1e-2)),
    ("colour", "demo"): CSIRecipe(Stage("cnn4", 32, 5, 128, 1e-3), Stage(None, None, 10, 256, 1e-2)),
    ("colour", "paper"): CSIRecipe(
        Stage("resnet18", None, 700, 128, 0.1, optimizer="sgd", weight_decay=1e-6, warmup_epochs=10, cosine=True),
        Stage(None, None, 100, 32, 0.1, augment=True, optimizer="sgd", momentum=0.0, weight_decay=1e-6,
              cosine=True)),
})


class CSINet(ContrastiveNet):
    """ContrastiveNet with a 4-way shift head and CSI's joint (class, rotation) head of 4K outputs."""

    def __init__(self, arch: str, in_channels: int, image_size: int, width: int | None, num_classes: int,
                 projection: int = 128):
        super().__init__(arch, in_channels, image_size, width, num_classes, projection, shifts=ROTATIONS)
        self.num_classes = num_classes
        self.joint_head = nn.Linear(self.backbone.out_dim, ROTATIONS * num_classes)

    def heads(self) -> list[nn.Module]:
        """The modules step 2 trains on the frozen encoder."""
        return [self.classifier, self.shift_head, self.joint_head]


def rotate(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of a (B, C, H, W) batch, rotation-major ((4B, C, H, W): all of rotation 0,
    then 1, ...), and their shift labels (4B,): k for `torch.rot90(images, k, dims=(2, 3))`."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    shifts = torch.arange(ROTATIONS, device=images.device).repeat_interleave(len(images))
    return rotated, shifts


def joint_labels(labels: torch.Tensor, shifts: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CSI's joint (class, rotation) label: class + K * rotation."""
    return labels + num_classes * shifts


def rotated_views(images: torch.Tensor, transform, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`views` SimCLR views of each image at each of the 4 rotations, every sample its own draw.

    Returns (4 * views * B samples, rotation-major as in `rotate`, each rotation block holding
    view 1 of all images, then view 2, ...; their shift labels)."""
    drawn = augment(images.repeat(ROTATIONS * views, 1, 1, 1), transform)
    rotated = torch.cat([torch.rot90(block, k, dims=(2, 3)) for k, block in enumerate(drawn.chunk(ROTATIONS))])
    shifts = torch.arange(ROTATIONS, device=images.device).repeat_interleave(views * len(images))
    return rotated, shifts


def sup_csi_labels(labels: torch.Tensor, shifts: torch.Tensor, num_classes: int, views: int = 2) -> torch.Tensor:
    """The SupCon labels of `rotated_views`' samples: the joint label of each sample's image."""
    return joint_labels(labels.repeat(ROTATIONS * views), shifts, num_classes)


def pretrain_loss(transform, temperature: float, num_classes: int):
    """Step 1's loss: SupCon over 2 views x 4 rotations with joint (class, rotation) labels."""

    def loss(model: CSINet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        samples, shifts = rotated_views(x, transform, views=2)
        embeddings = model.projector(model.backbone(samples))
        return supcon_loss(embeddings, sup_csi_labels(y, shifts, num_classes), temperature)

    return loss


def heads_loss(model: CSINet, features: torch.Tensor, labels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Step 2's loss on rotation-major encoder features of B images x 4 rotations: cross-entropy of
    the classifier on rotation 0, of the shift head and of the joint head on all 4 rotations.
    (CSI gives each head its own optimiser; the heads share no parameter and the features carry
    no gradient, so one optimiser on the sum takes the same steps.)"""
    batch = len(labels)
    all_labels = labels.repeat(ROTATIONS)
    return (F.cross_entropy(model.classifier(features[:batch]), labels)
            + F.cross_entropy(model.shift_head(features), shifts)
            + F.cross_entropy(model.joint_head(features), joint_labels(all_labels, shifts, model.num_classes)))


def train_heads(net: CSINet, inputs: TrainInputs, stage: Stage, transform) -> None:
    """Step 2: only the three heads learn; the encoder is frozen and its batch norm statistics stay."""
    net.requires_grad_(False).eval()
    for head in net.heads():
        head.requires_grad_(True)
    images, labels = inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device)
    name = f"csi-heads[{inputs.task.name}]"
    if stage.augment:  # CSI's way: every batch flipped, rotated and SimCLR-augmented anew
        def loss(model, x, y):
            model.backbone.eval()
            with torch.no_grad():
                samples, shifts = rotated_views(x, transform, views=1)
                features = model.backbone(samples)
            return heads_loss(model, features, y, shifts)

        train_epochs(net, images, labels, loss, stage=stage, generator=inputs.generator, transform=to_float,
                     name=name)
    else:  # features of the 4 rotations of the plain images, computed once: (N, 4, D)
        features = map_batches(lambda x: torch.stack(net.backbone(rotate(x)[0]).chunk(ROTATIONS), dim=1),
                               images, transform=to_float)

        def loss(model, f, y):
            shifts = torch.arange(ROTATIONS, device=f.device).repeat_interleave(len(f))
            return heads_loss(model, f.transpose(0, 1).flatten(0, 1), y, shifts)

        train_epochs(net, features, labels, loss, stage=stage, generator=inputs.generator, name=name)
    net.requires_grad_(True)


def build(task, recipe) -> CSINet:
    channels, size, _ = task.image_shape
    part = recipe.pick(RECIPES)
    return CSINet(part.pretrain.arch, channels, size, part.pretrain.width, task.num_classes, part.projection)


def train(net: CSINet, inputs: TrainInputs) -> CSINet:
    part = inputs.recipe.pick(RECIPES)
    channels, size, _ = inputs.task.image_shape
    transform = simclr_transform(channels, size)
    net.requires_grad_(True)
    for head in net.heads():
        head.requires_grad_(False)
    inputs.fit(net, part.pretrain, pretrain_loss(transform, part.temperature, net.num_classes), to_float, "csi")
    train_heads(net, inputs, part.heads, transform)
    return net.eval()


register_shared_model(SharedModel(
    kind="csi",
    description="SupCSI: SupCon over 2 views x 4 rotations with joint (class, rotation) labels, then "
                "classifier, rotation and joint heads on the frozen encoder",
    build=build,
    train=train,
    recipe_part=lambda recipe: recipe.pick(RECIPES),
    network=True,
))
