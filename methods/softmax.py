"""Maximum softmax probability (MSP): Hendrycks & Gimpel, ICLR 2017.

ID score = max_c softmax(f(x))_c on the network it scores (`net`, default: the cross-entropy
ID classifier).
"""
from dataclasses import dataclass

from bench.method import ClassifierDetector, register_method


@dataclass
class Softmax(ClassifierDetector):
    """Maximum softmax probability of the scored network."""

    def score_outputs(self, logits, penultimate):
        return logits.softmax(dim=1).max(dim=1).values


register_method("softmax", Softmax)
