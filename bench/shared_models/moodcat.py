"""MOODCAT's generator and conditional binary classifier C_b, trained on ID data and cached.

Kinds come from two small tables, so each ablation of the paper is its own cache entry:
- `GENERATORS`: the generator as released (random masks, class-conditional) and the
  ablations without masks, with a fixed mask ratio, and unconditional;
- C_b kinds: one per generator, plus, for the released generator, one per registered
  dataset whose unlabeled images also serve as negatives (paper section 3.6): the dataset
  is part of the kind, so it is part of the cache key.

Both models train on the task's ID training split; the method calibrates its scores on the
task's ID validation split (`Task.id_val`, held out from it), so no calibration image was seen by
either network. The released code holds out its own part of the training set for this.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bench.data import DATASETS, load_split
from bench.errors import BenchError
from bench.nets.moodcat import (PairClassifier, Synthesizer, UNetDiscriminator, apply_masks, kl_divergence,
                                random_masks, ssim)
from bench.preprocess import Preprocess
from bench.recipes import RecipeTable, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, to_float

log = logging.getLogger(__name__)

# Generator loss weights of the released code (SPEC.md section 4).
LOSS_WEIGHTS = {"adv_pixel": 0.5, "adv_image": 0.5, "kl": 2.0, "ssim": 5.0, "mse": 3.0, "l1": 2.0}
CUTMIX_MAX_PROBABILITY = 0.5  # Schonfeld et al.: CutMix probability ramps up from 0 to 0.5
SSIM_FLOOR = 1e-4  # -log SSIM needs a positive SSIM; early syntheses can score <= 0


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

    def __post_init__(self):
        require(self, positive=("width", "disc_width", "epochs", "batch_size", "g_lr", "d_lr", "cutmix_rampup",
                                "max_images"))


@dataclass(frozen=True)
class PairStage:
    """How MOODCAT's conditional binary classifier C_b is trained (its code is not released)."""

    width: int  # 64 channels in the released network
    epochs: int
    batch_size: int
    lr: float
    max_images: int | None = None

    def __post_init__(self):
        require(self, positive=("width", "epochs", "batch_size", "lr", "max_images"))


@dataclass(frozen=True)
class MoodcatRecipe:
    generator: GanStage
    pair_classifier: PairStage


# Per scale. paper: the released code's widths (32 / 32 / 64), batch 96 and learning rates;
# its epoch counts are not given (SPEC.md only says CutMix ramps up over 200 epochs), so 400
# generator epochs and C_b's whole schedule are our choice. demo: width 4 (C_b 8), 16,000
# images (250 batches) each, lr 2e-4 for G (5e-5 learns too little in so few steps): a few
# minutes per Fashion-MNIST partition on one core; smoke: a few batches.
RECIPES = RecipeTable("moodcat", {
    "smoke": MoodcatRecipe(GanStage(4, 4, 1, 64, 2e-4, 2e-4, cutmix_rampup=1, max_images=384),
                           PairStage(8, 1, 64, 2e-4, max_images=384)),
    "demo": MoodcatRecipe(GanStage(4, 4, 1, 64, 2e-4, 2e-4, cutmix_rampup=1, max_images=16000),
                           PairStage(8, 1, 64, 2e-4, max_images=16000)),
    "paper": MoodcatRecipe(GanStage(32, 32, 400, 96, 5e-5, 2e-4, cutmix_rampup=200), PairStage(64, 20, 96, 2e-4)),
})


@dataclass(frozen=True)
class GeneratorVariant:
    kind: str
    mask: str  # mask style while training (and, by default, at test time)
    conditional: bool
    description: str


GENERATORS = (
    GeneratorVariant("moodcat_generator", "random", True,
                     "MOODCAT generator: random masks (10-33%), class-conditional BigGAN decoder, U-Net D"),
    GeneratorVariant("moodcat_generator_nomask", "none", True, "MOODCAT ablation: generator trained without masks"),
    GeneratorVariant("moodcat_generator_fixedmask", "fixed", True,
                     "MOODCAT ablation: generator trained with a fixed 30% mask"),
    GeneratorVariant("moodcat_generator_uncond", "random", False,
                     "MOODCAT ablation: unconditional generator (the label is ignored)"),
)


def generator_variant(mask: str, conditional: bool) -> GeneratorVariant:
    for variant in GENERATORS:
        if (variant.mask, variant.conditional) == (mask, conditional):
            return variant
    known = "; ".join(f"mask={v.mask}, conditional={v.conditional}" for v in GENERATORS)
    raise BenchError(f"no MOODCAT generator with mask={mask!r}, conditional={conditional}; known: {known}")


def pair_classifier_kind(generator: GeneratorVariant, external: str | None) -> str:
    if external and generator is not GENERATORS[0]:
        raise BenchError(f"external negatives are trained with the released generator only, not {generator.kind}")
    base = generator.kind.replace("moodcat_generator", "moodcat_cb")
    return f"{base}+{external}" if external else base


def training_part(inputs: TrainInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The ID training images (uint8) and labels on the device."""
    return inputs.train.images.to(inputs.device), inputs.train.labels.to(inputs.device)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] images to MOODCAT's [-1, 1]."""
    return (to_float(images) if images.dtype == torch.uint8 else images) * 2 - 1


def _epoch_batches(count: int, batch_size: int, limit: int | None, inputs: TrainInputs) -> list[torch.Tensor]:
    """Index batches of one shuffled epoch, cut to `limit` images when the recipe sets one."""
    return list(torch.randperm(count, generator=inputs.generator).to(inputs.device)[:limit].split(batch_size))


def build_generator(variant: GeneratorVariant):
    def build(task, recipe):
        channels, size, _ = task.image_shape
        return Synthesizer(channels, size, task.num_classes, recipe.pick(RECIPES).generator.width, variant.conditional)

    return build


def generator_losses(synthesis, target, mu, logvar, image_logit, pixel_logit) -> dict[str, torch.Tensor]:
    """The generator's loss terms; `LOSS_WEIGHTS` weighs them."""
    similarity = ssim((synthesis + 1) / 2, (target + 1) / 2).clamp(min=SSIM_FLOOR)
    return {
        "adv_pixel": F.softplus(-pixel_logit).mean(),
        "adv_image": F.softplus(-image_logit).mean(),
        "kl": kl_divergence(mu, logvar),
        "ssim": -similarity.log().mean(),
        "mse": F.mse_loss(synthesis, target),
        "l1": F.l1_loss(synthesis, target),
    }


def discriminator_loss(disc, real, fake, labels, cutmix_probability: float, generator: torch.Generator):
    """Non-saturating loss on both heads; with some probability a CutMix term and its consistency term.

    CutMix: real pixels inside a random rectangle, fake outside; the image head must call the
    mix fake, the pixel head must reproduce the mask, and its output on the mix must equal
    the mix of its outputs on the real and the fake image.
    """
    image_logit, pixel_logit = disc(torch.cat([real, fake]), torch.cat([labels, labels]))
    count = len(real)
    loss = (F.softplus(-image_logit[:count]).mean() + F.softplus(image_logit[count:]).mean()
            + F.softplus(-pixel_logit[:count]).mean() + F.softplus(pixel_logit[count:]).mean())
    if float(torch.rand((), generator=generator)) < cutmix_probability:
        ratios = (0.1, 0.9)
        real_part = random_masks(count, real.shape[2], real.shape[3], ratios, generator).to(real.device).float()
        mixed = real_part * real + (1 - real_part) * fake
        mixed_image, mixed_pixel = disc(mixed, labels)
        target_pixel = real_part * pixel_logit[:count].detach() + (1 - real_part) * pixel_logit[count:].detach()
        loss = (loss + F.softplus(mixed_image).mean()
                + F.binary_cross_entropy_with_logits(mixed_pixel, real_part)
                + F.mse_loss(mixed_pixel, target_pixel))
    return loss


def train_generator(variant: GeneratorVariant):
    def train(model: Synthesizer, inputs: TrainInputs) -> Synthesizer:
        stage = inputs.recipe.pick(RECIPES).generator
        images, labels = training_part(inputs)
        channels = images.shape[1]
        disc = UNetDiscriminator(channels, inputs.task.num_classes if variant.conditional else 1,
                                 stage.disc_width).to(inputs.device)
        g_opt = torch.optim.Adam(model.parameters(), lr=stage.g_lr, betas=(0.0, 0.999))
        d_opt = torch.optim.Adam(disc.parameters(), lr=stage.d_lr, betas=(0.0, 0.999))
        model.train()
        disc.train()
        for epoch in range(stage.epochs):
            batches = _epoch_batches(len(images), stage.batch_size, stage.max_images, inputs)
            totals = dict.fromkeys(LOSS_WEIGHTS, 0.0)
            for step, index in enumerate(batches):
                real, condition = to_signed(images[index]), model.condition(labels[index])
                masked = apply_masks(real, variant.mask, training=True, generator=inputs.generator)
                synthesis, mu, logvar = model(masked, labels[index])
                progress = epoch + step / len(batches)
                cutmix = CUTMIX_MAX_PROBABILITY * min(1.0, progress / stage.cutmix_rampup)
                d_loss = discriminator_loss(disc, real, synthesis.detach(), condition, cutmix, inputs.generator)
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                image_logit, pixel_logit = disc(synthesis, condition)
                terms = generator_losses(synthesis, real, mu, logvar, image_logit, pixel_logit)
                g_loss = sum(LOSS_WEIGHTS[name] * value for name, value in terms.items())
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                for name, value in terms.items():
                    totals[name] += float(value.detach()) / len(batches)
            log.info("%s[%s] epoch %d/%d %s", variant.kind, inputs.task.name, epoch + 1, stage.epochs,
                     " ".join(f"{name} {value:.3f}" for name, value in totals.items()))
        return model.eval()

    return train


def wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the classes other than `labels`, per image."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


@torch.no_grad()
def synthesize(generator_model: Synthesizer, images: torch.Tensor, labels: torch.Tensor, mask: str,
               generator: torch.Generator) -> torch.Tensor:
    """Test-time synthesis in [-1, 1]: mask with the test ratios, decode the encoder's mean."""
    masked = apply_masks(images, mask, training=False, generator=generator)
    return generator_model(masked, labels, sample=False)[0]


def pair_batch(generator_model, images, labels, external, external_labels, mask, num_classes, generator):
    """C_b inputs for one batch: (images, syntheses, condition labels, targets +1 / -1).

    Positive: (x, G(M(x), y)) with the true label y. Negative: (x, G(M(x), y')) with y' != y
    drawn uniformly; external images likewise with y' != the ID classifier's prediction.
    """
    negative_labels = wrong_labels(labels, num_classes, generator)
    sources = [images, images]
    conditions = [labels, negative_labels]
    if external is not None:
        sources.append(external)
        conditions.append(wrong_labels(external_labels, num_classes, generator))
    inputs = torch.cat(sources)
    conditions = torch.cat(conditions)
    syntheses = synthesize(generator_model, inputs, conditions, mask, generator)
    targets = torch.cat([torch.ones(len(images)), -torch.ones(len(inputs) - len(images))]).to(inputs.device)
    return inputs, syntheses, conditions, targets


def pair_hinge_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. (2): relu(1 - C_b) on positive pairs plus relu(1 + C_b) on negative pairs (each averaged)."""
    positive, negative = targets > 0, targets < 0
    return F.relu(1 - logits[positive]).mean() + F.relu(1 + logits[negative]).mean()


def external_negatives(name: str, task, count: int, classifier, inputs: TrainInputs):
    """Unlabeled images of another registered dataset, in the ID image shape, and the ID classifier's
    predictions on them (negatives get any label but the prediction)."""
    if name == task.dataset:
        raise BenchError(f"external negatives from {name!r}, the ID dataset itself, would include the "
                         "unknown classes that are the OOD test set; choose another dataset")
    source = DATASETS.get(name)
    split = "train" if "train" in source.splits else source.splits[0]
    preprocess = Preprocess.to_shape(task.image_shape)
    images = load_split(name, split, inputs.data_root, preprocess).subset(count, inputs.seed).images
    images = images.to(inputs.device)
    with torch.no_grad():
        predictions = torch.cat([classifier(to_float(chunk)).argmax(1) for chunk in images.split(1000)])
    return images, predictions


def build_pair_classifier(task, recipe):
    channels, _, _ = task.image_shape
    return PairClassifier(channels, task.num_classes, recipe.pick(RECIPES).pair_classifier.width)


def train_pair_classifier(variant: GeneratorVariant, external: str | None):
    def train(model: PairClassifier, inputs: TrainInputs) -> PairClassifier:
        stage = inputs.recipe.pick(RECIPES).pair_classifier
        generator_model = inputs.dependencies[variant.kind].eval()
        images, labels = training_part(inputs)
        num_classes = inputs.task.num_classes
        if external:
            extra, extra_predictions = external_negatives(external, inputs.task, len(images),
                                                          inputs.dependencies["classifier"].eval(), inputs)
        optimiser = torch.optim.Adam(model.parameters(), lr=stage.lr, betas=(0.0, 0.999))
        model.train()
        for epoch in range(stage.epochs):
            batches = _epoch_batches(len(images), stage.batch_size, stage.max_images, inputs)
            total = 0.0
            for index in batches:
                extra_batch = extra_labels = None
                if external:
                    pick = torch.randint(len(extra), (len(index),), generator=inputs.generator).to(inputs.device)
                    extra_batch, extra_labels = to_signed(extra[pick]), extra_predictions[pick]
                pairs, syntheses, conditions, targets = pair_batch(
                    generator_model, to_signed(images[index]), labels[index], extra_batch, extra_labels,
                    variant.mask, num_classes, inputs.generator)
                loss = pair_hinge_loss(model(pairs, syntheses, conditions), targets)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) / len(batches)
            log.info("C_b %s[%s] epoch %d/%d hinge %.4f", pair_classifier_kind(variant, external),
                     inputs.task.name, epoch + 1, stage.epochs, total)
        return model.eval()

    return train


def generator_part(recipe) -> dict:
    part = recipe.pick(RECIPES)
    return {"generator": asdict(part.generator)}


def pair_classifier_part(recipe) -> dict:
    part = recipe.pick(RECIPES)
    return {"pair_classifier": asdict(part.pair_classifier)}


def _register(variant: GeneratorVariant) -> None:
    register_shared_model(SharedModel(
        kind=variant.kind,
        description=variant.description,
        build=build_generator(variant),
        train=train_generator(variant),
        recipe_part=generator_part,
    ))
    externals = DATASETS.names() if variant is GENERATORS[0] else []
    for external in (None, *externals):
        suffix = f", negatives also from unlabeled {external}" if external else ""
        register_shared_model(SharedModel(
            kind=pair_classifier_kind(variant, external),
            description=f"MOODCAT C_b on (image, synthesis) pairs of {variant.kind}, hinge loss{suffix}",
            build=build_pair_classifier,
            train=train_pair_classifier(variant, external),
            recipe_part=pair_classifier_part,
            requires=(variant.kind, "classifier") if external else (variant.kind,),
        ))


for _variant in GENERATORS:
    _register(_variant)
