"""Maximum logit (MaxLogit): Hendrycks et al., "Scaling Out-of-Distribution Detection for
Real-World Settings", ICML 2022.

ID score = max_c f(x)_c on the network it scores (`net`, default: the ID classifier). Unlike
MSP it keeps the logits' scale, which the softmax normalises away.
"""
from dataclasses import dataclass

from bench.method import ClassifierDetector, register_method


@dataclass
class MaxLogit(ClassifierDetector):
    """Largest logit of the scored network."""

    def score_outputs(self, logits, penultimate):
        return logits.max(dim=1).values


register_method("maxlogit", MaxLogit)
