"""ODIN: Liang, Li & Srikant, "Enhancing the Reliability of Out-of-distribution Image
Detection in Neural Networks", ICLR 2018 (reference code: github.com/facebookresearch/odin).

x~ = x - eps * sign(-grad_x log S_y(x; T)), y = the predicted class, S the softmax of
f(x) / T; ID score = max_c S_c(x~; T). Defaults T = 1000, eps = 0.0014 (SPEC.md §5).

The perturbation is taken in the [0, 1] pixel space the harness feeds every network.
When a model normalises its input internally (x_n = (x - mean) / std), this is exactly
the reference code's step of eps * sign / std in normalised space, because the sign of
the gradient is the same in both spaces; so the per-channel std scaling comes for free.
The defaults are the paper's, not tuned: the paper tuned T and eps on OOD validation data.
`bench sweep --method odin` tunes them on a task's validation data (`bench.sweep`), never on test sets.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import ClassifierDetector, Prediction, option, register_method


@dataclass
class ODIN(ClassifierDetector):
    """Temperature-scaled max softmax after a small input step that raises it."""

    temperature: float = option(1000.0, gt=0)
    epsilon: float = option(0.0014, ge=0)  # 0: no input step

    def predict(self, x: torch.Tensor) -> Prediction:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = self.classifier_(x)
            loss = F.cross_entropy(logits / self.temperature, logits.argmax(1))  # = -log S_y(x; T)
            (gradient,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            perturbed = x.detach() - self.epsilon * gradient.sign()
            logits_perturbed, penultimate = self.classifier_.forward_features(perturbed)
            return Prediction(self.score_outputs(logits_perturbed, penultimate), logits.detach().argmax(1))

    def score_outputs(self, logits, penultimate):
        return (logits / self.temperature).softmax(dim=1).max(dim=1).values


register_method("odin", ODIN)
