"""SupCLR's score: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, as CSI's code
evaluates it (`--ood_score baseline`, github.com/alinlab/CSI): the maximum softmax probability
of the linear classifier trained on the frozen SupCon encoder (`bench/shared_models/supclr.py`).

ID score = max_c softmax(W h(x) + b)_c.
"""
from dataclasses import dataclass

from bench.method import register_method
from methods.softmax import Softmax


@dataclass
class SupCLR(Softmax):
    """Maximum softmax probability of the linear head on a SupCon-trained encoder."""

    net: str = "supclr"


register_method("supclr", SupCLR)
