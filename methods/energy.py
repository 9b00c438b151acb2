"""Energy score (EBO): Liu et al., NeurIPS 2020.

ID score = -E(x) = T * logsumexp(f(x) / T), on the network it scores (`net`, default: the
cross-entropy ID classifier).
"""
from dataclasses import dataclass

from bench.method import ClassifierDetector, option, register_method


def negative_energy(logits, temperature: float = 1.0):
    """-E(x) = T * logsumexp(logits / T): higher means more in-distribution."""
    return temperature * (logits / temperature).logsumexp(dim=1)


@dataclass
class Energy(ClassifierDetector):
    """Negative free energy of the scored network's logits."""

    temperature: float = option(1.0, gt=0)

    def score_outputs(self, logits, penultimate):
        return negative_energy(logits, self.temperature)


register_method("energy", Energy)
