"""The network contract: what a scored network provides, and how a user's model is fitted to it.

Every post-hoc score and CMG's stage 2 read a network through two members:
- `forward_features(x) -> (logits, penultimate)` for float images in [0, 1], the penultimate
  features being the input of the final layer;
- `final_layer`: the `nn.Linear` that maps penultimate features to logits.
`bench.nets.backbones.Classifier` and every training procedure's network provide both; a
user's model is wrapped by `as_feature_classifier`, which reads the features with a hook.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError


class HoldsClassifier(nn.Module):
    """A trained module that keeps more than its classifier (CCC's generator, UDG's cluster head, OSRCI's GAN) and
    meets the contract through `self.classifier`, so every score and CMG read just that."""

    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier.forward_features(x)

    @property
    def final_layer(self) -> nn.Linear:
        return self.classifier.final_layer

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes


def has_final_layer(network: nn.Module) -> bool:
    """Whether `network` meets the contract (and so can be scored, or fine-tuned by CMG's stage 2)."""
    return callable(getattr(network, "forward_features", None)) and isinstance(getattr(network, "final_layer", None),
                                                                                  nn.Linear)


class FeatureClassifier(nn.Module):
    """A user's model seen through the interface post-hoc methods use: logits and penultimate features."""

    def __init__(self, model: nn.Module, final_layer: nn.Linear, native: bool, normalize=None):
        super().__init__()
        self.model, self._final_layer, self.native = model, final_layer, native
        mean, std = normalize if normalize is not None else (0.0, 1.0)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float).view(1, -1, 1, 1))

    @property
    def final_layer(self) -> nn.Linear:
        return self._final_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        if self.native:
            return self.model.forward_features(x)
        captured = []
        handle = self._final_layer.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        return logits, captured[-1].flatten(1)


def as_feature_classifier(model: nn.Module, probe: torch.Tensor, num_classes: int, normalize=None) -> FeatureClassifier:
    """Wrap `model` and check on `probe` images that logits and features are what methods expect."""
    native = has_final_layer(model)
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not native and not linears:
        raise BenchError("the model has no nn.Linear layer to read penultimate features from; give it "
                         "forward_features(x) -> (logits, features) and a final_layer attribute")
    wrapped = FeatureClassifier(model, model.final_layer if native else linears[-1], native, normalize).eval()
    wrapped.to(probe.device)
    try:
        with torch.no_grad():
            logits, features = wrapped.forward_features(probe)
    except (RuntimeError, ValueError, TypeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchError(f"the model fails on images of shape {tuple(probe.shape[1:])} in [0, 1]: {first_line}") from None
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise BenchError(f"the model gives outputs of shape {tuple(logits.shape[1:])}; this task needs "
                         f"{num_classes} logits, one per known class")
    if not torch.allclose(wrapped.final_layer(features), logits, atol=1e-4, rtol=1e-4):
        raise BenchError("the model's last nn.Linear does not produce its logits; give the model "
                         "forward_features(x) -> (logits, features) and a final_layer attribute")
    return wrapped
