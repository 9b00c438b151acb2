"""OSRCI, open set recognition with counterfactual images: Neal, Olson, Fern, Wong & Li, "Open Set
Learning with Counterfactual Images", ECCV 2018 (github.com/lwneal/counterfactual-open-set).

Three steps, each on ID training data only (`generativeopenset/training.py`, `counterfactual.py`):
1. An encoder E, a generator G and a discriminator D. Per batch, D minimises
   softplus(D(G(z))) + 0.01 softplus(-D(x)) + 10 * gradient penalty, for codes z drawn from the
   prior; E and G minimise mean|G(E(x)) - x| - 0.01 D(G(E(x))). Beside them a K-class
   classifier C_K learns with a one-vs-rest logistic loss, softplus(-l_c) for the true class and
   softplus(l_c) for the others (it does not depend on the GAN, so it trains in its own loop).
2. Counterfactuals: a training image's code z0 = E(x) is moved by gradient steps on
       ||z - z0||^2 * distance_weight + log(1 + sum_c exp C_K(G(z))_c),
   the second term being -log P(unknown) when an extra logit fixed at 0 stands for the unknown
   class; after each step every position of z is put back on the unit sphere. G(z) is the image.
3. The K+1 classifier starts as a copy of C_K and is fine-tuned with cross-entropy over
   [l_1..l_K, 0]: ID images towards their class, counterfactuals (quantised to uint8, as the
   reference saves them as PNG) towards the fixed-zero unknown logit.

The K+1 head is K known logits plus a constant unknown logit 0, exactly as in the reference
(`F.pad(logits, (0, 1))`), so the saved network meets the contract as it is: `final_layer` is
the K-output nn.Linear and `forward_features` gives the K known logits. The native score
(`methods/osrci.py`) reads P(unknown) = 1 / (1 + sum_c exp l_c) from them; `energy[net=osrci]`
and `osrci+cmg_e` read the same K logits. The saved module also keeps G, E, C_K and the codes
of up to 256 of the images the training counterfactuals started from, so `samples` can search
and draw counterfactuals again without data.

Not carried over from the reference: its architectures (encoder32 / generator32 /
multiclassDiscriminator32 / classifier32: here the harness's backbones + MLP head for both
classifiers, and E, G, D of our own with a 4x4 code of `latent` channels; D has no batch norm,
dropout or minibatch-discrimination features); Adam betas (0.5, 0.999) for the classifiers (the
harness's Adam defaults there; E, G, D keep them); its two generator steps per batch (one
step on the sum of reconstruction and adversarial terms here, which also reaches E); the
gradient penalty's norm over channels only (per image here, as in WGAN-GP); three quirks of its
counterfactual search: a distance term taken between batch means of z (per image here), a
gradient scaled by the batch loss itself, and a renormalisation in 4 slices of the code after
each step where the encoder used 16 (so the first step halves the code's norm); networks left
in training mode while searching (evaluation mode here); two forward passes per K+1 step, one
for ID images and one for counterfactuals (one pass over both here, so batch norm sees one
batch); crop+flip for the classifiers only where the dataset asks (the reference has none); and
the `fuxin` evaluation mode of its `start.sh` (see `methods/osrci.py`).

Cost at demo, Fashion-MNIST partition 0-5 (32,400 training images, `--cpus-per-trial 1` on the
2-core machine): 136 s of CPU to train (the 3 GAN epochs about two thirds of it), 1 s to score;
wall time 112 s with the cores partly busy, 340 s with them shared by about 9 other processes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from bench.augment import training_input
from bench.nets.backbones import Classifier, build_backbone
from bench.nets.contract import HoldsClassifier
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, to_float

log = logging.getLogger(__name__)

SEARCH_BATCH = 256  # images per batch of the counterfactual search; each image's descent is its own
SAMPLE_CODES = 256  # start codes kept in the saved model for `samples`


@dataclass(frozen=True)
class GanStage:
    """How E, G and D are trained (Adam, betas (0.5, 0.999), as in the reference)."""

    width: int  # channel multiplier of E, G and D (64: G's widths 512-256-128 are the reference's)
    latent: int  # channels per position of the 4x4 code (64 in the reference)
    epochs: int
    batch_size: int
    lr: float
    max_images: int | None = None  # images per epoch (None: all)
    real_weight: float = 0.01  # of D's loss on real images ("discriminator_weight")
    adversarial_weight: float = 0.01  # of the adversarial term of E and G ("generator_weight")
    reconstruction_weight: float = 1.0
    gradient_penalty: float = 10.0

    def __post_init__(self):
        require(self, positive=("width", "latent", "epochs", "batch_size", "lr", "max_images"),
                non_negative=("real_weight", "adversarial_weight", "reconstruction_weight", "gradient_penalty"))


@dataclass(frozen=True)
class Search:
    """The counterfactual search: gradient steps on each image's code."""

    steps: int  # cf_max_iters
    step_size: float  # cf_speed, per image
    distance_weight: float  # cf_distance_weight

    def __post_init__(self):
        require(self, positive=("steps", "step_size"), non_negative=("distance_weight",))


@dataclass(frozen=True)
class OSRCIRecipe:
    gan: GanStage
    classifier: Stage  # C_K, one-vs-rest logistic loss; the K+1 classifier has its architecture
    open_set: Stage  # the K+1 fine-tuning of a copy of C_K: its arch and width are C_K's, so None here
    search: Search
    counterfactuals: int  # images made for the K+1 classifier

    def __post_init__(self):
        require(self, positive=("counterfactuals",))
        if self.open_set.arch is not None or self.open_set.width is not None:
            raise ValueError("open_set.arch and open_set.width must stay None: the K+1 classifier is a copy of C_K "
                             "(set classifier.arch / classifier.width)")


# paper: the reference's `params.json`, `start.sh` and optimiser defaults: batch 64, latent 64,
# Adam lr 1e-4 (1e-5 for the K+1 fine-tuning: its lr / 10), 30 GAN (and C_K) epochs, 3 K+1
# epochs, 50 x 64 counterfactuals of 100 steps of 0.1 with distance weight 1; C_K on cnn9, the
# CMG code's 9-conv net, which has the reference classifier32's channels, for every dataset, as
# the reference does. demo: C_K is the classifier's demo stage, the K+1 fine-tuning one epoch at
# its lr / 10, the search 20 steps; smoke: seconds.
_SMOKE = OSRCIRecipe(GanStage(4, 8, 1, 64, 2e-4, max_images=256), Stage("cnn4", 8, 4, 64, 2e-3),
                     Stage(None, None, 1, 64, 5e-4), Search(5, 0.1, 1.0), counterfactuals=128)
RECIPES = RecipeTable("osrci", {
    ("gray28", "smoke"): _SMOKE,
    ("gray28", "demo"): OSRCIRecipe(GanStage(16, 16, 3, 64, 2e-4), Stage("cnn4", 16, 3, 128, 1e-3),
                                    Stage(None, None, 1, 128, 1e-4), Search(20, 0.1, 1.0), counterfactuals=2000),
    ("gray28", "paper"): OSRCIRecipe(GanStage(64, 64, 30, 64, 1e-4), Stage("cnn9", None, 30, 64, 1e-4),
                                     Stage(None, None, 3, 64, 1e-5), Search(100, 0.1, 1.0), counterfactuals=3200),
    ("colour", "smoke"): _SMOKE,
    ("colour", "demo"): OSRCIRecipe(GanStage(16, 16, 3, 64, 2e-4), Stage("cnn4", 32, 10, 128, 1e-3),
                                    Stage(None, None, 1, 128, 1e-4), Search(20, 0.1, 1.0), counterfactuals=2000),
    ("colour", "paper"): OSRCIRecipe(GanStage(64, 64, 30, 64, 1e-4), Stage("cnn9", None, 30, 64, 1e-4),
                                     Stage(None, None, 3, 64, 1e-5), Search(100, 0.1, 1.0), counterfactuals=3200),
})


def recipe_part(recipe) -> OSRCIRecipe:
    """This recipe's entry; crop+flip for the classifiers where the dataset asks for it (CIFAR)."""
    part = recipe.pick(RECIPES)
    return replace(part, classifier=replace(part.classifier, augment=recipe.augment),
                   open_set=replace(part.open_set, augment=recipe.augment))


# --- networks ------------------------------------------------------------------------------------

def _sides(size: int) -> list[int]:
    """Image side halved (rounding up) down to the code's side: 28 -> [28, 14, 7, 4], 32 -> [32, 16, 8, 4]."""
    sides = [size]
    while sides[-1] > 4:
        sides.append((sides[-1] + 1) // 2)
    return sides


def _on_spheres(z: torch.Tensor) -> torch.Tensor:
    """Every position of a (B, latent, h, w) code scaled to a unit vector."""
    return F.normalize(z, dim=1)


def _downsampler(channels: int, size: int, width: int, batch_norm: bool) -> tuple[nn.Sequential, int]:
    """Stride-2 3x3 convs down to the code's side, widths w, 2w, 4w...; returns it and its last width."""
    layers: list[nn.Module] = []
    cin = channels
    for step in range(len(_sides(size)) - 1):
        cout = width * 2**step
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(cout)] if batch_norm else []
        layers += [nn.LeakyReLU(0.2)]
        cin = cout
    return nn.Sequential(*layers), cin


class Encoder(nn.Module):
    """Image in [0, 1] -> (B, latent, 4, 4) code, each position on the unit sphere."""

    def __init__(self, channels: int, size: int, width: int, latent: int):
        super().__init__()
        body, out = _downsampler(channels, size, width, batch_norm=True)
        self.body = nn.Sequential(*body, nn.Conv2d(out, latent, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _on_spheres(self.body(x))


class Generator(nn.Module):
    """Code -> image in [0, 1]: a 1x1 conv to w * 2^n channels, then n transposed convs that double the side."""

    def __init__(self, channels: int, size: int, width: int, latent: int):
        super().__init__()
        sides = _sides(size)[::-1]
        cin = width * 2 ** (len(sides) - 1)
        layers: list[nn.Module] = [nn.Conv2d(latent, cin, 1, bias=False)]
        for step, (side_in, side_out) in enumerate(zip(sides, sides[1:])):
            last = step == len(sides) - 2
            cout = channels if last else cin // 2
            # kernel 4 doubles the side, kernel 3 gives 2 * side - 1 (7 -> 14 -> 28 from 4)
            layers.append(nn.ConvTranspose2d(cin, cout, side_out - 2 * side_in + 4, 2, 1, bias=last))
            layers += [] if last else [nn.LeakyReLU(0.2), nn.BatchNorm2d(cout)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.Sigmoid())
        self.code_shape = (latent, sides[0], sides[0])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class Discriminator(nn.Module):
    """Image -> one realness logit; no batch norm, so the gradient penalty is per image."""

    def __init__(self, channels: int, size: int, width: int):
        super().__init__()
        body, out = _downsampler(channels, size, width, batch_norm=False)
        side = _sides(size)[-1]
        self.body = nn.Sequential(*body, nn.Flatten(), nn.Linear(out * side * side, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, 0]


class OSRCINetwork(HoldsClassifier):
    """The K+1 classifier (K known logits; the unknown logit is a constant 0) and what makes counterfactuals.

    `classifier` meets the network contract; `classifier_k` (C_K), `encoder` and `generator` are
    kept so counterfactual images can be drawn from the saved model (`samples`).
    """

    def __init__(self, classifier: Classifier, classifier_k: Classifier, encoder: Encoder, generator: Generator,
                 search: Search, start_codes: int):
        super().__init__()
        self.classifier, self.classifier_k = classifier, classifier_k
        self.encoder, self.generator = encoder, generator
        self.search = search  # settings, not weights: rebuilt from the recipe with the module
        # Codes of the first training counterfactuals' start images: `samples` searches from them again.
        self.register_buffer("start_codes", torch.zeros(start_codes, *generator.code_shape))

    @torch.no_grad()
    def counterfactuals(self, codes: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] decoded from `codes` moved away from every known class of C_K."""
        images = []
        for chunk in codes.split(SEARCH_BATCH):
            z = counterfactual_codes(self.generator, self.classifier_k, chunk, self.search)
            images.append(self.generator(z))
        return torch.cat(images)


def prior_codes(count: int, generator_model: Generator, generator: torch.Generator, device) -> torch.Tensor:
    """`count` codes with every position uniform on the unit sphere (normalised Gaussians)."""
    return _on_spheres(torch.randn(count, *generator_model.code_shape, generator=generator)).to(device)


def known_mass(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + sum_c exp l_c) per row: -log P(unknown) with the unknown logit fixed at 0."""
    return torch.logsumexp(F.pad(logits, (0, 1)), dim=1)


def counterfactual_codes(generator: nn.Module, classifier: nn.Module, z0: torch.Tensor, search: Search) -> torch.Tensor:
    """Gradient steps from `z0` on distance_weight * ||z - z0||^2 + log(1 + sum_c exp C(G(z))_c), per image.

    Both networks should be in evaluation mode: each image's descent is then independent of its batch.
    """
    z = z0.detach()
    for _ in range(search.steps):
        with torch.enable_grad():
            z = z.requires_grad_(True)
            loss = known_mass(classifier(generator(z))) + search.distance_weight * (z - z0).pow(2).flatten(1).sum(1)
            gradient, = torch.autograd.grad(loss.sum(), z)  # a sum: every image gets its own gradient
        z = _on_spheres(z.detach() - search.step_size * gradient)
    return z


# --- training ------------------------------------------------------------------------------------

def build(task, recipe) -> OSRCINetwork:
    channels, size, _ = task.image_shape
    part = recipe_part(recipe)
    stage, gan = part.classifier, part.gan

    def classifier() -> Classifier:
        return Classifier(build_backbone(stage.arch, channels, size, stage.width), task.num_classes)

    return OSRCINetwork(classifier(), classifier(), Encoder(channels, size, gan.width, gan.latent),
                        Generator(channels, size, gan.width, gan.latent), part.search,
                        min(part.counterfactuals, SAMPLE_CODES))


def gradient_penalty(disc: Discriminator, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator):
    """WGAN-GP: mean over images of (||grad D||_2 - 1)^2 at random points between real and fake images."""
    mix = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device)
    points = (mix * real + (1 - mix) * fake).requires_grad_(True)
    gradient, = torch.autograd.grad(disc(points).sum(), points, create_graph=True)
    return (gradient.flatten(1).norm(dim=1) - 1).pow(2).mean()


def train_gan(model: OSRCINetwork, gan: GanStage, inputs: TrainInputs) -> None:
    """Step 1: D against G on prior codes; E and G on reconstruction plus fooling D with reconstructions."""
    channels, size, _ = inputs.task.image_shape
    disc = Discriminator(channels, size, gan.width).to(inputs.device)
    autoencoder = [*model.encoder.parameters(), *model.generator.parameters()]
    ae_opt = torch.optim.Adam(autoencoder, lr=gan.lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=gan.lr, betas=(0.5, 0.999))
    images = inputs.train.images.to(inputs.device)
    model.encoder.train()
    model.generator.train()
    for epoch in range(gan.epochs):
        order = torch.randperm(len(images), generator=inputs.generator).to(inputs.device)[:gan.max_images]
        totals = {"d": 0.0, "reconstruction": 0.0, "adversarial": 0.0}
        batches = order.split(gan.batch_size)
        for index in batches:
            real = to_float(images[index])
            with torch.no_grad():
                fake = model.generator(prior_codes(len(real), model.generator, inputs.generator, inputs.device))
            d_loss = (F.softplus(disc(fake)).mean() + gan.real_weight * F.softplus(-disc(real)).mean()
                      + gan.gradient_penalty * gradient_penalty(disc, real, fake, inputs.generator))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            reconstruction = model.generator(model.encoder(real))
            pixel = (reconstruction - real).abs().mean()
            disc.requires_grad_(False)
            adversarial = -disc(reconstruction).mean()
            ae_opt.zero_grad(set_to_none=True)
            (gan.reconstruction_weight * pixel + gan.adversarial_weight * adversarial).backward()
            ae_opt.step()
            disc.requires_grad_(True)
            for name, value in (("d", d_loss), ("reconstruction", pixel), ("adversarial", adversarial)):
                totals[name] += float(value.detach()) / len(batches)
        log.info("osrci GAN[%s] epoch %d/%d %s", inputs.task.name, epoch + 1, gan.epochs,
                 " ".join(f"{name} {value:.4f}" for name, value in totals.items()))
    model.encoder.eval()
    model.generator.eval()


def one_vs_rest_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of softplus(-l_y) and softplus(l_c), c != y, over all B x K logits (the reference's C_K loss)."""
    return F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


def open_set_loss(logits: torch.Tensor, labels: torch.Tensor, counterfactual_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over [l_1..l_K, 0]: ID images to their class, counterfactuals to the unknown class K."""
    known = F.cross_entropy(F.pad(logits, (0, 1)), labels)
    return known + known_mass(counterfactual_logits).mean()


def make_counterfactuals(model: OSRCINetwork, count: int, inputs: TrainInputs) -> torch.Tensor:
    """Step 2: `count` counterfactuals (uint8) from the codes of ID training images drawn at random."""
    pick = torch.randint(len(inputs.train), (count,), generator=inputs.generator)
    with torch.no_grad():
        codes = torch.cat([model.encoder(to_float(chunk.to(inputs.device)))
                           for chunk in inputs.train.images[pick].split(SEARCH_BATCH)])
    model.start_codes.copy_(codes[:len(model.start_codes)])
    images = model.counterfactuals(codes)
    with torch.no_grad():
        before = known_mass(model.classifier_k(model.generator(codes[:SEARCH_BATCH]))).mean()
        after = known_mass(model.classifier_k(images[:SEARCH_BATCH])).mean()
    log.info("osrci[%s] %d counterfactuals: log(1 + sum exp C_K) %.3f on reconstructions, %.3f after the search",
             inputs.task.name, count, float(before), float(after))
    return (images * 255).round().to(torch.uint8)


def train(model: OSRCINetwork, inputs: TrainInputs) -> OSRCINetwork:
    part = recipe_part(inputs.recipe)
    train_gan(model, part.gan, inputs)
    inputs.fit(model.classifier_k, part.classifier, lambda net, x, y: one_vs_rest_loss(net(x), y),
               training_input(part.classifier.augment), "osrci C_K")
    counterfactuals = make_counterfactuals(model, part.counterfactuals, inputs)
    model.classifier.load_state_dict(model.classifier_k.state_dict())
    transform = training_input(part.open_set.augment)

    def loss(net, x, y):
        pick = torch.randint(len(counterfactuals), (len(x),), generator=inputs.generator).to(inputs.device)
        logits = net(torch.cat([x, transform(counterfactuals[pick])]))  # one pass: batch norm sees both
        return open_set_loss(logits[:len(x)], y, logits[len(x):])

    inputs.fit(model.classifier, part.open_set, loss, transform, "osrci K+1")
    return model.eval()


def samples(model: OSRCINetwork, task, count: int, generator: torch.Generator) -> torch.Tensor:
    """Counterfactuals searched again from the kept start codes (repeated after all of them are used).

    Not from prior codes: G learns to make realistic images only from the encoder's codes (D sees
    decoded prior codes as fakes, and G never learns from them), so G(prior) looks like noise.
    """
    bank = len(model.start_codes)
    order = torch.cat([torch.randperm(bank, generator=generator) for _ in range(-(-count // bank))])[:count]
    return model.eval().counterfactuals(model.start_codes[order.to(model.start_codes.device)]).cpu()


register_shared_model(SharedModel(
    kind="osrci",
    description="OSRCI: GAN with an encoder, counterfactual images by latent descent, K+1 classifier (unknown logit 0)",
    build=build,
    train=train,
    recipe_part=recipe_part,
    network=True,
    samples=samples,
))
