"""The method contract, the method registry and the `name[key=value,...]` syntax.

A method is a dataclass whose fields are its hyperparameters (nothing is done in the
constructor). `fit(ctx)` learns from what the runner hands over: ID training data and
the trained shared models the method names in `requires`. `predict(x)` returns an ID
score (higher = more in-distribution) and a closed-set label for every image.
Learned attributes end in `_`.

Two axes: a trained network (a shared model that meets `bench.nets.contract`, or a method
that provides one, like ReAct's rectified classifier) and a score on it. Every post-hoc
score takes `net=<network>` (`energy[net=cac]`); a method that fine-tunes a network
(`tunes_network`) is written `<network>+<method>` (`csi+cmg_e`, the same as `cmg_e[net=csi]`).

Every option's type is its annotation, and what it accepts beyond that is declared beside it
(`sigma: float = option(5.0, gt=0)`, `bench.registry.option`); a `MethodSpec` checks every value
against both, and the method's own `check` for constraints between options, when it is built,
so `bench run` rejects a bad option in one line before any data is loaded.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch

from bench.data import ImageSet
from bench.errors import BenchError
from bench.features import FeatureCache, network_outputs
from bench.protocol import DataRef, Task
from bench.recipes import Recipe
from bench.registry import Registry, option, option_problem
from bench.training import to_float

__all__ = ["Detector", "ClassifierDetector", "FitContext", "Prediction", "MethodSpec", "option", "register_method",
           "to_float"]


class Prediction(NamedTuple):
    score: torch.Tensor  # (B,) ID score, higher = more in-distribution
    label: torch.Tensor  # (B,) predicted known class


@dataclass
class FitContext:
    """Everything a method may learn from; never holds test data."""

    task: Task
    train: ImageSet
    models: dict[str, torch.nn.Module]
    recipe: Recipe | None  # None when a user's own model is evaluated (nothing is trained)
    seed: int
    device: torch.device
    generator: torch.Generator = field(repr=False, default=None)
    # The trained networks' outputs per data split, computed once for all methods (None: run the network each time).
    # `train` must then be `task.id_train` subset by `recipe.train_limit` and `seed`, as the runner loads it.
    features: FeatureCache | None = field(repr=False, default=None)
    # The task's ID validation images (`Task.id_val`, held out from `train`), for calibrating on data no model
    # trained on; None when the task has no validation split.
    validation: ImageSet | None = field(repr=False, default=None)

    def train_images(self) -> torch.Tensor:
        """ID training images as float in [0, 1], on the device."""
        return to_float(self.train.images.to(self.device))

    def train_labels(self) -> torch.Tensor:
        return self.train.labels.to(self.device)


class Detector(ABC):
    """Base class: subclasses are dataclasses whose fields are hyperparameters.

    `requires` names the shared models `fit` finds in `ctx.models`. It is a class attribute
    for most methods; a method whose options change what it needs makes it a property.
    """

    requires: ClassVar[tuple[str, ...]] = ()
    tunes_network: ClassVar[bool] = False  # True: written `<network>+<name>`, the network it fine-tunes first

    def fit(self, ctx: FitContext) -> "Detector":
        return self

    def scoring_split(self, ref: DataRef, images: torch.Tensor, limit: int | None, seed: int, device):
        """A context around `predict` on every batch of one test split, in order: `images` (uint8), the subset
        (`limit`, `seed`) of `ref`, scored on `device`. A method may read what it needs for them from a cache
        instead of computing it."""
        return contextlib.nullcontext()

    def check(self) -> None:
        """Raise a BenchError for a combination of options that cannot work (each option alone is already
        checked against its declaration); runs when a MethodSpec is built, before anything is loaded."""

    def recipe_part(self, recipe: Recipe) -> Any:
        """The part of the recipe that this method's own fitting reads (None: none); it enters trial ids."""
        return None

    def code(self) -> tuple[str, ...]:
        """Modules whose code computes this method's numbers; trial ids hash them and what they import."""
        return (type(self).__module__,)

    @abstractmethod
    def predict(self, x: torch.Tensor) -> Prediction:
        """Score a batch of float images in [0, 1] on the fitted device."""

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


@dataclass
class ClassifierDetector(Detector):
    """A post-hoc score on the outputs of a trained network (by default the cross-entropy classifier).

    `net` names the network: a shared model that meets `bench.nets.contract`
    (`forward_features(x) -> (logits, penultimate)` and `final_layer`), or a method that
    provides one. Subclasses implement `score_outputs(logits, penultimate)`; the label is the
    argmax. Subclasses that learn statistics override `fit_outputs`, which then receives the
    network's outputs on the ID training data, computed once.

    When the network is a trained shared model and the runner gives a `FitContext.features`
    cache, those outputs come from it (`bench.features`): computed once per (network, split) for
    every method. So do the outputs on each test split, unless a subclass overrides `predict`
    (ODIN perturbs the input, so it runs the network itself).
    """

    net: str = "classifier"

    @property
    def requires(self) -> tuple[str, ...]:
        return network_requires(self.net)

    def code(self) -> tuple[str, ...]:
        return super().code() + network_code(self.net)

    def fit(self, ctx: FitContext) -> "ClassifierDetector":
        self.classifier_ = resolve_network(self.net, ctx).eval()
        cached = (ctx.features is not None and ctx.features.covers(self.net)
                  and self.classifier_ is ctx.models.get(self.net))  # a trained shared model, not one a method makes
        self.features_, self.replay_ = (ctx.features if cached else None), None
        if type(self).fit_outputs is not ClassifierDetector.fit_outputs:
            limit = ctx.recipe.train_limit if ctx.recipe is not None else None
            logits, penultimate = self.split_outputs(ctx.task.id_train, ctx.train.images, limit, ctx.seed, ctx.device)
            self.fit_outputs(logits, penultimate, ctx.train_labels())
        return self

    def split_outputs(self, ref: DataRef, images: torch.Tensor, limit: int | None, seed: int, device):
        """(logits, penultimate) of the network on uint8 `images`, the subset (`limit`, `seed`) of `ref`: from the
        feature cache when there is one, else computed."""
        if getattr(self, "features_", None) is None:
            return network_outputs(self.classifier_, images, device)
        return self.features_.outputs(self.net, self.classifier_, ref, limit, seed, images, device)

    @contextlib.contextmanager
    def scoring_split(self, ref: DataRef, images: torch.Tensor, limit: int | None, seed: int, device):
        """Within it, `predict` reads the split's cached outputs batch by batch instead of running the network
        (when there is a cache and `predict` is this class's: a function of the outputs alone)."""
        if getattr(self, "features_", None) is None or type(self).predict is not ClassifierDetector.predict:
            yield
            return
        self.replay_ = _Replay(*self.split_outputs(ref, images, limit, seed, device))
        try:
            yield
        finally:
            self.replay_ = None

    def network(self) -> torch.nn.Module:
        """The network this score reads, for methods that build on it (`energy+cmg_e`)."""
        return self.classifier_

    def fit_outputs(self, logits: torch.Tensor, penultimate: torch.Tensor, labels: torch.Tensor) -> None:
        """Learn from the network's outputs on ID training data (nothing, unless overridden)."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Prediction:
        replay = getattr(self, "replay_", None)
        logits, penultimate = replay.next(len(x)) if replay is not None else self.classifier_.forward_features(x)
        return Prediction(self.score_outputs(logits, penultimate), logits.argmax(1))

    @abstractmethod
    def score_outputs(self, logits: torch.Tensor, penultimate: torch.Tensor) -> torch.Tensor:
        """ID score from the network's logits and penultimate features."""


def _network_method(net: str) -> "MethodSpec | None":
    """None when `net` is a trained network (a shared model), else the method that provides it.

    Anything else, or a shared model that is no network (a CVAE, a generator), is a one-line error.
    """
    from bench.shared import SHARED_MODELS, network_kinds

    if net in SHARED_MODELS:
        if not SHARED_MODELS.get(net).network:
            raise BenchError(f"{net!r} has no final linear layer to score or fine-tune (it is not a classifier "
                             f"network); networks are: {', '.join(network_kinds())}")
        return None
    if net in METHODS and callable(getattr(METHODS.get(net).cls, "network", None)):
        return MethodSpec(net)
    providers = [name for name, entry in METHODS.items() if callable(getattr(entry.cls, "network", None))]
    raise BenchError(f"unknown network {net!r}; choose a trained network ({', '.join(network_kinds())}) "
                     f"or a method that provides one ({', '.join(providers[:12])}, ...)")


def network_requires(net: str) -> tuple[str, ...]:
    """The shared models that network `net` needs."""
    method = _network_method(net)
    return (net,) if method is None else method.requires()


def network_code(net: str) -> tuple[str, ...]:
    """Modules whose code makes network `net` beyond its shared model (a method that provides it)."""
    method = _network_method(net)
    return () if method is None else method.build().code()


def resolve_network(net: str, ctx: FitContext) -> torch.nn.Module:
    """Network `net` for this context: the trained shared model, or the network a fitted method provides."""
    method = _network_method(net)
    if method is None:
        return ctx.models[net]
    return method.build().fit(ctx).network()


classifier_outputs = network_outputs  # (logits, penultimate) of uint8 images, batch by batch


class _Replay:
    """A split's outputs handed out batch by batch, in the order `predict` is called on its images."""

    def __init__(self, logits: torch.Tensor, penultimate: torch.Tensor):
        self.logits, self.penultimate, self.position = logits, penultimate, 0

    def next(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, self.position = self.position, self.position + count
        if self.position > len(self.logits):
            raise RuntimeError(f"predict was called on more images than the split's {len(self.logits)} cached outputs")
        # copies, so that every batch is scored from a tensor of its own, as when the network computes it
        return self.logits[start:self.position].clone(), self.penultimate[start:self.position].clone()


@dataclass(frozen=True)
class MethodEntry:
    """A registered name: a Detector class plus the keyword arguments that make this variant."""

    name: str
    cls: type
    defaults: dict
    summary: str

    def parameters(self) -> dict[str, Any]:
        values = {f.name: f.default for f in dataclasses.fields(self.cls) if f.init}
        return {**values, **self.defaults}


METHODS: Registry[MethodEntry] = Registry("method", discover="methods")


def register_method(name: str, cls: type, summary: str = "", **defaults) -> MethodEntry:
    """Register `cls` (a Detector dataclass) under `name`, optionally as a variant with `defaults`."""
    if not (isinstance(cls, type) and issubclass(cls, Detector) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"method {name!r} must be a Detector dataclass")
    doc = summary or (cls.__doc__ or "").strip().splitlines()[0]
    return METHODS.register(name, MethodEntry(name, cls, defaults, doc))


@dataclass(frozen=True)
class MethodSpec:
    """A method as asked for on the command line: a registered name plus overrides."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """The canonical spelling: `net+name[...]` for a method that fine-tunes a network, else `name[...]`."""
        overrides, prefix = self.overrides, ""
        if METHODS.get(self.name).cls.tunes_network and "net" in dict(overrides):
            prefix = f"{dict(overrides)['net']}+"
            overrides = tuple((k, v) for k, v in overrides if k != "net")
        options = f"[{','.join(f'{k}={v}' for k, v in overrides)}]" if overrides else ""
        return f"{prefix}{self.name}{options}"

    def build(self) -> Detector:
        """The detector, once every option is known and accepted (a one-line BenchError otherwise)."""
        entry = METHODS.get(self.name)
        known = entry.parameters()
        unknown = [key for key, _ in self.overrides if key not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise BenchError(f"method {self.name!r} has no parameter {', '.join(unknown)}{hint}; "
                             f"its parameters are {', '.join(known)}")
        values = {**entry.defaults, **dict(self.overrides)}
        for key, value in values.items():
            problem = option_problem(entry.cls, key, value)
            if problem:
                raise BenchError(f"{self.label}: {problem}")
        method = entry.cls(**values)
        method.check()
        return method

    def requires(self) -> tuple[str, ...]:
        """Shared-model kinds this configuration needs; a variant may need different ones."""
        return tuple(self.build().requires)


_ITEM = re.compile(r"\s*(?:([A-Za-z0-9_]+)\s*\+\s*)?([A-Za-z0-9_]+)\s*(?:\[(.*?)\])?\s*(?:,|$)")


def literal_value(text: str) -> Any:
    """A Python literal (3, 0.5, False, None, (20,80)) as itself; anything else as text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def split_options(text: str) -> list[str]:
    """`a=1,b=(20,80)` -> ['a=1', 'b=(20,80)']: split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def parse_methods(text: str) -> list[MethodSpec]:
    """Parse `a,b[x=1,y=0.5],c` into specs, checking every name and parameter exists."""
    specs, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _ITEM.match(text, position)
        if not match or match.end() == position:
            raise BenchError(f"cannot read the method list {text!r} near {text[position:]!r}; "
                             "write e.g. cmg_e[sigma=3],energy[net=cac],csi+cmg_e")
        network, name, args = match.groups()
        overrides = [("net", network)] if network else []
        for pair in split_options(args or ""):
            key, sep, value = pair.partition("=")
            if not sep:
                raise BenchError(f"method option {pair!r} needs the form key=value")
            overrides.append((key.strip(), literal_value(value.strip())))
        keys = [key for key, _ in overrides]
        if len(set(keys)) < len(keys):
            raise BenchError(f"method {name!r} is given the same option twice ({', '.join(sorted(keys))}); "
                             "`a+b` already sets b's net=a")
        spec = MethodSpec(name, tuple(sorted(overrides)))
        spec.requires()  # validate name, parameters and network now, before anything is trained
        specs.append(spec)
        position = match.end()
    if not specs:
        raise BenchError("no methods given; see `bench list methods`")
    labels = [spec.label for spec in specs]
    repeated = list(dict.fromkeys(label for label in labels if labels.count(label) > 1))
    if repeated:
        raise BenchError(f"the method list names {', '.join(repeated)} more than once; give each method once "
                         "(`a+b` is the same method as b[net=a])")
    return specs
