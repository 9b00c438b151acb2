"""CMG: Class-Mixed Generation for OOD detection (Wang, Shao, Lin, Hu, Liu; ECML PKDD 2022).

Paper: ../shared/papers/cmg.txt; reference code: github.com/shaoyijia/CMG (facts in SPEC.md §3).

Stage 1 (shared models, trained once): the ID classifier f(h(x)) and a CVAE.
Pseudo-OOD: decode z ~ N(0, sigma^2 I) with a class-mixed condition k*e_i + (1-k)*e_j,
k ~ Bernoulli(0.5) per embedding dimension, i != j drawn uniformly from the known classes.
Stage 2: freeze the feature extractor h, fine-tune the head on 128 ID + 128 pseudo-OOD
per batch with Adam (lr 1e-4):
- CMG-s (`objective="extra_class"`): an (N+1)-th logit for OOD, cross-entropy;
  ID score = -softmax(x)_{N+1}.
- CMG-e (`objective="energy"`): CE + 0.1 * [mean(relu(E_in - m_in)^2) + mean(relu(m_out - E_out)^2)],
  E = -T logsumexp(logits/T); m_in / m_out are the 20th / 80th percentiles of the energies
  of all ID training / pseudo-OOD data under the stage-1 model; ID score = -E.
The released code fine-tunes the whole 2-layer MLP head (`tune="head"`, the default); the
paper's text says only the final layer (`tune="last"`). The result is the model after the
last epoch: nothing is chosen on test data.

Ablations of the paper (§4.5) are parameters: `training="unfrozen"` (stage 2 also updates
h), `training="direct"` (one stage: a fresh network trained on ID + pseudo-OOD with the
stage-2 loss, margins from the stage-1 classifier), `pseudo_fraction` (0 = stage 2 on ID
data only), `sigma`, and `z_filter` (resample latent values inside [-t, t]).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.method import (Detector, FitContext, Prediction, network_code, network_requires, option, register_method,
                          resolve_network)
from bench.nets.contract import has_final_layer
from bench.recipes import RecipeTable, require
from bench.shared_models.classifier import stage as classifier_stage
from bench.training import map_batches, shuffled_batches
from methods.energy import negative_energy


@torch.no_grad()
def generate_pseudo_ood(cvae, count: int, sigma: float, generator: torch.Generator, device,
                        z_filter: float = 0.0, batch_size: int = 1000) -> torch.Tensor:
    """Decode `count` class-mixed pseudo-OOD images in [0, 1] (on `device`)."""
    classes = cvae.num_classes
    if classes < 2:
        raise BenchError("CMG mixes two known classes, so it needs at least 2 ID classes")
    images = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        first = torch.randint(classes, (n,), generator=generator)
        second = (first + torch.randint(1, classes, (n,), generator=generator)) % classes
        emb_first = cvae.embed(F.one_hot(first, classes).float().to(device))
        emb_second = cvae.embed(F.one_hot(second, classes).float().to(device))
        keep = torch.bernoulli(torch.full(emb_first.shape, 0.5), generator=generator).to(device)
        mixed = keep * emb_first + (1 - keep) * emb_second
        z = torch.randn(n, cvae.latent_dim, generator=generator) * sigma
        while z_filter > 0 and (near := z.abs() <= z_filter).any():
            z[near] = torch.randn(int(near.sum()), generator=generator) * sigma
        images.append(cvae.decode(z.to(device), mixed))
    return torch.cat(images) if images else torch.empty(0)


@dataclass
class EnergyObjective:
    """CMG-e: cross-entropy plus squared hinges pushing ID energy below m_in and pseudo-OOD above m_out."""

    weight: float
    temperature: float
    percentiles: tuple[float, float]

    def outputs(self, num_classes: int) -> int:
        return num_classes

    def calibrate(self, id_logits: torch.Tensor, ood_logits: torch.Tensor) -> None:
        self.margin_in = float(torch.quantile(self.energy(id_logits), self.percentiles[0] / 100))
        self.margin_out = (float(torch.quantile(self.energy(ood_logits), self.percentiles[1] / 100))
                           if len(ood_logits) else float("nan"))

    def energy(self, logits: torch.Tensor) -> torch.Tensor:
        return -negative_energy(logits, self.temperature)

    def loss(self, id_logits, labels, ood_logits) -> torch.Tensor:
        hinge = F.relu(self.energy(id_logits) - self.margin_in).pow(2).mean()
        if len(ood_logits):
            hinge = hinge + F.relu(self.margin_out - self.energy(ood_logits)).pow(2).mean()
        return F.cross_entropy(id_logits, labels) + self.weight * hinge

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return negative_energy(logits, self.temperature)

    def classify(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)


@dataclass
class ExtraClassObjective:
    """CMG-s: pseudo-OOD images form an (N+1)-th class; the ID score is minus its probability."""

    def outputs(self, num_classes: int) -> int:
        return num_classes + 1

    def calibrate(self, id_logits, ood_logits) -> None:
        pass

    def loss(self, id_logits, labels, ood_logits) -> torch.Tensor:
        ood_labels = torch.full((len(ood_logits),), id_logits.shape[1] - 1, device=id_logits.device)
        return F.cross_entropy(torch.cat([id_logits, ood_logits]), torch.cat([labels, ood_labels]))

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.softmax(dim=1)[:, -1]

    def classify(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, :-1].argmax(dim=1)


def _widen_output(head: nn.Sequential, outputs: int) -> nn.Sequential:
    """Give the head's final layer `outputs` rows, keeping the trained ones (new rows: default init)."""
    old = head[-1]
    if old.out_features == outputs:
        return head
    new = nn.Linear(old.in_features, outputs).to(old.weight.device)
    with torch.no_grad():
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
    head[-1] = new
    return head


def _embed(network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Outputs of `network` without gradients; an empty input gives an empty output."""
    return map_batches(network, inputs) if len(inputs) else inputs.new_empty(0)


def _reset(module: nn.Module) -> nn.Module:
    for layer in module.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return module


class Penultimate(nn.Module):
    """A network's penultimate features (the input of its final layer), as a module."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(x)[1]


class TunedNetwork(nn.Module):
    """`features` followed by a (fine-tuned) head; meets the network contract, so any score can read it."""

    def __init__(self, features: nn.Module, head: nn.Sequential):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        penultimate = self.head[:-1](self.features(x))
        return self.head[-1](penultimate), penultimate

    @property
    def final_layer(self) -> nn.Linear:
        return self.head[-1]


@dataclass(frozen=True)
class FineTune:
    """Stage 2: Adam, `batch_size` ID + `batch_size` pseudo-OOD images per step (SPEC.md §3)."""

    epochs: int
    lr: float
    batch_size: int

    def __post_init__(self):
        require(self, positive=("epochs", "lr", "batch_size"))


# The paper's 10 fine-tuning epochs (the code: 15) are cheap on frozen features.
RECIPES = RecipeTable("cmg", {
    "smoke": FineTune(1, 1e-4, 128),
    "demo": FineTune(10, 1e-4, 128),
    "paper": FineTune(10, 1e-4, 128),
})


def fine_tune(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, pseudo: torch.Tensor, objective,
              stage: FineTune, generator: torch.Generator, tune: str = "last") -> TunedNetwork:
    """CMG's stage 2 on any network of the contract; returns the tuned network, `network` is left as it was.

    Everything but the tuned layers is frozen, so the features they read are computed once:
    - `tune="last"`: the final linear layer, on the network's penultimate features (the
      paper, and "+CMG-e" on another method's network, Table 2);
    - `tune="head"`: the whole head after `network.backbone` (the released code, on the
      cross-entropy classifier).
    The margins are fixed from the network's outputs before the first step (`objective.calibrate`).
    """
    network = copy.deepcopy(network).eval().requires_grad_(False)
    if tune == "head":
        if not isinstance(getattr(network, "head", None), nn.Sequential) or not hasattr(network, "backbone"):
            raise BenchError("CMG tune='head' needs a network with a backbone and an MLP head (the cross-entropy "
                             "classifier); use tune='last' to fine-tune only the final linear layer")
        features, head = network.backbone, network.head
    elif tune == "last":
        if not has_final_layer(network):
            raise BenchError("CMG fine-tunes a final linear layer, and this network has none (it needs "
                             "forward_features(x) -> (logits, penultimate) and final_layer)")
        features, head = Penultimate(network), nn.Sequential(network.final_layer)
    else:
        raise BenchError(f"CMG tune={tune!r} is not one of head, last")
    id_features, ood_features = _embed(features, images), _embed(features, pseudo)
    head = _widen_output(head, objective.outputs(network.final_layer.out_features))
    objective.calibrate(_embed(head, id_features), _embed(head, ood_features))
    head.requires_grad_(True)
    _train_pairs(head, head.parameters(), id_features, labels, ood_features, objective, stage, generator)
    return TunedNetwork(features, head).eval()


def _train_pairs(model, parameters, id_inputs, labels, ood_inputs, objective, stage, generator) -> None:
    """Adam over epochs of the ID data; each batch pairs B ID inputs with B pseudo-OOD inputs."""
    optimiser = torch.optim.Adam(list(parameters), lr=stage.lr)
    model.train()
    ood_order = torch.empty(0, dtype=torch.long, device=id_inputs.device)
    for _ in range(stage.epochs):
        for index in shuffled_batches(len(id_inputs), stage.batch_size, generator, id_inputs.device):
            if len(ood_inputs):
                if len(ood_order) < len(index):
                    refill = torch.randperm(len(ood_inputs), generator=generator).to(id_inputs.device)
                    ood_order = torch.cat([ood_order, refill])
                ood_batch, ood_order = ood_inputs[ood_order[: len(index)]], ood_order[len(index):]
                logits = model(torch.cat([id_inputs[index], ood_batch]))
                id_logits, ood_logits = logits[: len(index)], logits[len(index):]
            else:
                id_logits, ood_logits = model(id_inputs[index]), id_inputs.new_empty(0)
            loss = objective.loss(id_logits, labels[index], ood_logits)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()


@dataclass
class CMG(Detector):
    """Class-mixed pseudo-OOD from a CVAE, then fine-tuning of a network's head."""

    tunes_network: ClassVar[bool] = True

    net: str = "classifier"
    objective: str = option("energy", choices=("energy", "extra_class"))
    training: str = option("frozen", choices=("frozen", "unfrozen", "direct"))
    tune: str = option("auto", choices=("auto", "head", "last"))
    sigma: float = option(5.0, gt=0)
    pseudo_fraction: float = option(1.0, ge=0, le=1)  # 0: stage 2 on ID data only
    z_filter: float = option(0.0, ge=0)  # 0: no filter
    energy_weight: float = option(0.1, ge=0)
    margin_percentiles: tuple[float, float] = option((20.0, 80.0), ge=0, le=100)
    temperature: float = option(1.0, gt=0)
    epochs: int | None = option(None, ge=1)  # None: the recipe's
    lr: float | None = option(None, gt=0)  # None: the recipe's

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(network_requires(self.net) + ("cvae",)))

    def code(self) -> tuple[str, ...]:
        return super().code() + network_code(self.net)

    def recipe_part(self, recipe) -> dict:
        part = {"fine_tune": self._stage(recipe)}
        if self.training == "direct":  # a fresh network, trained with the classifier's schedule
            part["direct"] = classifier_stage(recipe)
        return part

    def _stage(self, recipe) -> FineTune:
        stage = recipe.pick(RECIPES)
        return FineTune(stage.epochs if self.epochs is None else self.epochs, stage.lr if self.lr is None else self.lr,
                        stage.batch_size)

    def _objective(self):
        objectives = {
            "energy": lambda: EnergyObjective(self.energy_weight, self.temperature, tuple(self.margin_percentiles)),
            "extra_class": ExtraClassObjective,
        }
        return self._choose("objective", objectives)()

    def _choose(self, parameter: str, options: dict):
        value = getattr(self, parameter)
        if value not in options:
            raise BenchError(f"CMG {parameter}={value!r} is not one of {', '.join(options)}")
        return options[value]

    def _tune(self) -> str:
        """auto: the released code's whole head on the CE classifier, the final layer on any other network."""
        if self.tune == "auto":
            return "head" if self.net == "classifier" else "last"
        return self._choose("tune", {"head": "head", "last": "last"})

    def check(self) -> None:
        if self.training != "frozen" and (self.net != "classifier" or self.tune == "last"):
            raise BenchError(f"CMG training={self.training!r} retrains the cross-entropy classifier's layers; it "
                             "takes neither net= nor tune='last'")

    def fit(self, ctx: FitContext) -> "CMG":
        strategy = self._choose("training", {"frozen": self._frozen, "unfrozen": self._unfrozen, "direct": self._direct})
        self.check()
        if self.pseudo_fraction < 0:
            raise BenchError("CMG pseudo_fraction must be >= 0")
        network = resolve_network(self.net, ctx).eval()
        images, labels = ctx.train_images(), ctx.train_labels()
        count = round(self.pseudo_fraction * len(images))
        pseudo = generate_pseudo_ood(ctx.models["cvae"].eval(), count, self.sigma, ctx.generator, ctx.device,
                                     self.z_filter)
        self.objective_ = self._objective()
        self.pseudo_count_ = count
        self.network_ = strategy(ctx, network, images, labels, pseudo).eval()
        return self

    def _frozen(self, ctx, network, images, labels, pseudo) -> nn.Module:
        """CMG proper: the feature extractor frozen, the head (or final layer) fine-tuned."""
        return fine_tune(network, images, labels, pseudo, self.objective_, self._stage(ctx.recipe), ctx.generator,
                         self._tune())

    def _unfrozen(self, ctx, classifier, images, labels, pseudo) -> nn.Module:
        """Ablation: stage 2 as in CMG, but the feature extractor is fine-tuned too."""
        classifier = copy.deepcopy(classifier)
        network = self._prepare(classifier, images, pseudo)
        _train_pairs(network, network.parameters(), images, labels, pseudo, self.objective_, self._stage(ctx.recipe),
                     ctx.generator)
        return network

    def _direct(self, ctx, classifier, images, labels, pseudo) -> nn.Module:
        """Ablation: one stage, a freshly initialised network trained on ID + pseudo-OOD.

        The energy margins still come from the stage-1 classifier: an untrained network has
        no meaningful energies to take percentiles of.
        """
        classifier = copy.deepcopy(classifier)
        network = _reset(self._prepare(classifier, images, pseudo))
        stage = classifier_stage(ctx.recipe)
        _train_pairs(network, network.parameters(), images, labels, pseudo, self.objective_,
                     FineTune(stage.epochs, stage.lr, self._stage(ctx.recipe).batch_size), ctx.generator)
        return network

    def _prepare(self, classifier, images, pseudo) -> TunedNetwork:
        """The classifier with its head sized for the objective, and the margins fixed from its outputs."""
        head = _widen_output(classifier.head, self.objective_.outputs(classifier.num_classes))
        self.objective_.calibrate(_embed(nn.Sequential(classifier.backbone, head), images),
                                  _embed(nn.Sequential(classifier.backbone, head), pseudo))
        return TunedNetwork(classifier.backbone, head)

    def network(self) -> nn.Module:
        """The fine-tuned network, for post-hoc scores (`knn[net=cmg_e]`); CMG-s's has an extra class."""
        if self.objective != "energy":
            raise BenchError("only CMG-e's tuned network keeps one logit per known class; CMG-s adds an OOD class")
        return self.network_

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        logits = self.network_(x)
        return Prediction(self.objective_.score(logits), self.objective_.classify(logits))


register_method("cmg_e", CMG, "CMG-e: energy fine-tuning of the head on class-mixed pseudo-OOD", objective="energy")
register_method("cmg_s", CMG, "CMG-s: an extra OOD class in the head, fine-tuned on class-mixed pseudo-OOD",
                objective="extra_class")
register_method("cmg_e_unfrozen", CMG, "CMG-e ablation: stage 2 also fine-tunes the feature extractor",
                objective="energy", training="unfrozen")
register_method("cmg_e_direct", CMG, "CMG-e ablation: one-stage training on ID + pseudo-OOD from scratch",
                objective="energy", training="direct")
register_method("cmg_e_no_pseudo", CMG, "CMG-e ablation: stage 2 on ID data only (no pseudo-OOD)",
                objective="energy", pseudo_fraction=0.0)
