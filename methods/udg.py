"""UDG's score: Yang et al., "Semantically Coherent Out-of-Distribution Detection", ICCV 2021
(github.com/jingkang50/ICCV21_SCOOD).

ID score = max_c softmax(f(x))_c, the maximum softmax probability (the reference's default
post-processor, `postprocess: none` in `configs/test/cifar10.yml`), on the classifier trained with
clustering, OE on the auxiliary images outside ID-pure clusters and a cluster-prediction head
(`bench/shared_models/udg.py`).
"""
from dataclasses import dataclass

from bench.method import register_method
from methods.softmax import Softmax


@dataclass
class UDG(Softmax):
    """Maximum softmax probability of the UDG-trained classifier."""

    net: str = "udg"


register_method("udg", UDG)
