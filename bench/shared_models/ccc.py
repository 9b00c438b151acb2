"""CCC, the confidence-calibrated classifier: Lee, Lee, Lee & Shin, "Training Confidence-calibrated
Classifiers for Detecting Out-of-Distribution Samples", ICLR 2018 (github.com/alinlab/Confident_classifier).

A classifier C is trained jointly with a DCGAN (generator G, discriminator D). Every batch
takes three steps, in the reference's order (`src/run_joint_confidence.py`):
1. D: the usual GAN loss, real images against G(z);
2. G: the non-saturating GAN loss plus beta * KL(U || softmax(C(G(z)))), so G is pushed toward
   images that D still finds plausible but on which C is unsure: the low-density boundary
   of the ID data;
3. C: CE on the real batch + beta * KL(U || softmax(C(G(z')))) on fresh samples, so C learns
   to give near-uniform predictions off the ID data.
KL(U || p) = sum_c (1/K) log((1/K) / p_c) = -log K - mean_c log p_c, averaged over the batch
(the reference's `F.kl_div(log_softmax, uniform) * num_classes`). The score is the maximum
softmax probability (`methods/ccc.py`); the saved module holds C and G and meets the network
contract through C, so every post-hoc score (`energy[net=ccc]`) and CMG (`ccc+cmg_e`) read it,
and `samples` draws images from G.

beta: the reference uses 1 for SVHN and 0.1 for CIFAR-10, and gives no reason. 28x28 grayscale
(MNIST, Fashion-MNIST) takes beta = 1, SVHN's value: like SVHN these are centred single objects
on plain backgrounds, which a DCGAN fits well and a classifier separates with a wide margin, so
the classifier can afford the stronger pull toward uniform; the weaker CIFAR-10 value reads as
protecting accuracy on cluttered natural images. The colour entries are CIFAR-10's (0.1, batch
64). beta was fixed before any test-set number was seen, and not tuned on one.

Demo cost, measured on a shared 2-core CPU with `--cpus-per-trial 1`: Fashion-MNIST partition
0-5 (32,400 training images, 3 epochs) trains in 95 s, the whole `bench run --methods ccc` takes
1 min 42 s; the cross-entropy classifier's demo trains in 22 s. Each batch costs C about three
batches forward and backward (its own step on real + generated images, G's step through C).

Not carried over from the reference: its VGG13 classifier (the harness's backbones and MLP
head, as for the classifier and CAC; cnn9 / resnet18 at paper scale) and that network's weight
initialisation; its DCGAN for 32x32 only (other sides get the same layers on a ladder from
4-7 pixels: 28x28 is 7 -> 14 -> 28); batch norm handling, which its VGG13 does not need: C reads real and generated
images in one forward pass in its own step (separate passes would normalise each by its own
statistics), and scores G's samples in eval mode in G's step (so that step neither uses nor
updates batch statistics of generated images alone); crop+flip where the dataset asks for it
(the reference trains without augmentation). BCE on sigmoid outputs is written as softplus on
logits (the same loss, numerically stable). Like the reference, the model at the end of the
schedule is used.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.augment import training_input
from bench.nets.backbones import Classifier, build_backbone
from bench.nets.contract import HoldsClassifier
from bench.recipes import RecipeTable, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, shuffled_batches

log = logging.getLogger(__name__)


def _ladder(size: int) -> tuple[int, int]:
    """(start side, doublings): the DCGAN's side from 4-7 pixels up to `size` (28: 7->14->28, 32: 4->8->16->32)."""
    doublings = 0
    while size % 2 ** (doublings + 1) == 0 and size // 2 ** (doublings + 1) >= 4:
        doublings += 1
    return size // 2 ** doublings, doublings


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation, as the reference: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """DCGAN generator: noise (B, noise_dim, 1, 1) -> images in [0, 1]; widths halve as the side doubles."""

    def __init__(self, channels: int, size: int, noise_dim: int, width: int):
        super().__init__()
        start, doublings = _ladder(size)
        widths = [width * 2 ** (doublings - i) for i in range(doublings)]  # 32x32: 8w, 4w, 2w as the reference
        layers = [nn.ConvTranspose2d(noise_dim, widths[0], start, 1, 0, bias=False), nn.BatchNorm2d(widths[0]),
                  nn.ReLU(True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)
        self.noise_dim = noise_dim
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    """DCGAN discriminator, the generator's mirror: images -> (B,) real-vs-generated logits."""

    def __init__(self, channels: int, size: int, width: int):
        super().__init__()
        start, doublings = _ladder(size)
        widths = [width * 2 ** (i + 1) for i in range(doublings)]  # 32x32: 2w, 4w, 8w as the reference
        layers = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, start, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


class ConfidentClassifier(HoldsClassifier):
    """The classifier and its generator, saved together; the network contract is the classifier's."""

    def __init__(self, classifier: Classifier, generator: Generator):
        super().__init__()
        self.classifier, self.generator = classifier, generator


@dataclass(frozen=True)
class CCCRecipe:
    arch: str  # the classifier's backbone (bench.nets.backbones)
    width: int | None  # its channel width (None: the backbone's default)
    epochs: int
    batch_size: int
    lr: float  # the classifier's Adam
    beta: float  # weight of the KL-to-uniform term, in the classifier's loss and the generator's
    gan_lr: float = 2e-4  # Adam, betas (0.5, 0.999), for G and D
    noise_dim: int = 100
    gen_width: int = 64  # ngf
    disc_width: int = 64  # ndf
    drop_epoch: int | None = None  # after this many epochs all three learning rates are multiplied by `drop`
    drop: float = 0.1
    weight_decay: float = 0.0  # the classifier's
    augment: bool = False  # crop + flip on the real images (the dataset's choice)

    def __post_init__(self):
        require(self, positive=("width", "epochs", "batch_size", "lr", "gan_lr", "noise_dim", "gen_width",
                                "disc_width", "drop_epoch"),
                non_negative=("beta", "weight_decay"), fraction=("drop",))


# paper: the reference's settings (Adam lr 2e-4 for all three networks, G and D with betas
# (0.5, 0.999), 100 epochs, every lr x 0.1 after epoch 60, noise 100, ngf = ndf = 64, no weight
# decay; SVHN batch 128 and beta 1 for gray28, CIFAR-10 batch 64 and beta 0.1 for colour) on
# the CMG paper's backbones. smoke and demo: the classifier's backbones and learning rates with
# small GANs; as many epochs as the classifier, except colour demo (5 of 10: a CCC epoch costs
# about three classifier epochs).
RECIPES = RecipeTable("ccc", {
    ("gray28", "smoke"): CCCRecipe("cnn4", 8, 4, 64, 2e-3, beta=1.0, noise_dim=16, gen_width=8, disc_width=8),
    ("gray28", "demo"): CCCRecipe("cnn4", 16, 3, 128, 1e-3, beta=1.0, gen_width=16, disc_width=16),
    ("gray28", "paper"): CCCRecipe("cnn9", None, 100, 128, 2e-4, beta=1.0, drop_epoch=60),
    ("colour", "smoke"): CCCRecipe("cnn4", 8, 4, 64, 2e-3, beta=0.1, noise_dim=16, gen_width=8, disc_width=8),
    ("colour", "demo"): CCCRecipe("cnn4", 32, 5, 128, 1e-3, beta=0.1, gen_width=16, disc_width=16),
    ("colour", "paper"): CCCRecipe("resnet18", None, 100, 64, 2e-4, beta=0.1, drop_epoch=60),
})


def recipe_part(recipe) -> CCCRecipe:
    """This recipe's entry; crop+flip where the dataset asks for it (CIFAR), as for the classifier."""
    return recipe.pick(RECIPES, augment=recipe.augment)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(U || softmax(logits)) = -log K - mean_c log softmax(logits)_c."""
    log_probs = F.log_softmax(logits, dim=1)
    return -log_probs.mean(dim=1).mean() - math.log(logits.shape[1])


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE of D calling real images real and generated ones generated."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(disc_logits: torch.Tensor, class_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Non-saturating GAN loss (D should call the samples real) + beta * KL(U || C's softmax on them)."""
    return F.softplus(-disc_logits).mean() + beta * kl_to_uniform(class_logits)


def build(task, recipe):
    channels, size, _ = task.image_shape
    part = recipe_part(recipe)
    classifier = Classifier(build_backbone(part.arch, channels, size, part.width), task.num_classes)
    return ConfidentClassifier(classifier, Generator(channels, size, part.noise_dim, part.gen_width))


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def train(model: ConfidentClassifier, inputs: TrainInputs) -> ConfidentClassifier:
    part = recipe_part(inputs.recipe)
    channels, size, _ = inputs.task.image_shape
    classifier, generator = model.classifier, model.generator
    disc = Discriminator(channels, size, part.disc_width).to(inputs.device)
    c_opt = torch.optim.Adam(classifier.parameters(), lr=part.lr, weight_decay=part.weight_decay)
    g_opt = torch.optim.Adam(generator.parameters(), lr=part.gan_lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=part.gan_lr, betas=(0.5, 0.999))
    images, labels = inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device)
    transform = training_input(part.augment)

    def noise(count: int) -> torch.Tensor:
        z = torch.randn(count, part.noise_dim, 1, 1, generator=inputs.generator, device=inputs.generator.device)
        return z.to(inputs.device)

    model.train()
    disc.train()
    for epoch in range(part.epochs):
        if epoch == part.drop_epoch:
            for optimiser in (c_opt, g_opt, d_opt):
                for group in optimiser.param_groups:
                    group["lr"] *= part.drop
        totals = dict.fromkeys(("d", "g", "ce", "kl"), 0.0)
        batches = 0
        for index in shuffled_batches(len(images), part.batch_size, inputs.generator, inputs.device):
            real, y = transform(images[index]), labels[index]
            fake = generator(noise(len(real)))
            d_loss = discriminator_loss(disc(real), disc(fake.detach()))
            _step(d_opt, d_loss)

            # G's step: C (eval mode, frozen) and D (frozen) only pass gradients back to G.
            classifier.eval().requires_grad_(False)
            disc.requires_grad_(False)
            g_loss = generator_loss(disc(fake), classifier(fake), part.beta)
            _step(g_opt, g_loss)
            classifier.train().requires_grad_(True)
            disc.requires_grad_(True)

            with torch.no_grad():
                fresh = generator(noise(len(real)))
            logits = classifier(torch.cat([real, fresh]))
            ce, kl = F.cross_entropy(logits[:len(real)], y), kl_to_uniform(logits[len(real):])  # C's loss
            _step(c_opt, ce + part.beta * kl)

            batches += 1
            for name, value in (("d", d_loss), ("g", g_loss), ("ce", ce), ("kl", kl)):
                totals[name] += float(value.detach())
        log.info("ccc[%s] epoch %d/%d %s", inputs.task.name, epoch + 1, part.epochs,
                 " ".join(f"{name} {value / max(batches, 1):.4f}" for name, value in totals.items()))
    return model.eval()


@torch.no_grad()
def samples(model: ConfidentClassifier, task, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` images in [0, 1] from the trained generator (eval mode: its running batch-norm statistics)."""
    device = next(model.parameters()).device
    z = torch.randn(count, model.generator.noise_dim, 1, 1, generator=generator, device=generator.device)
    return model.generator.eval()(z.to(device)).cpu()


register_shared_model(SharedModel(
    kind="ccc",
    description="CCC: classifier (backbone + MLP head) trained jointly with a DCGAN, KL to uniform on its samples",
    build=build,
    train=train,
    recipe_part=recipe_part,
    network=True,
    samples=samples,
))
