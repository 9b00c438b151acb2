"""OE's score: Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier Exposure",
ICLR 2019 (github.com/hendrycks/outlier-exposure).

ID score = max_c softmax(f(x))_c, the maximum softmax probability (the default of the reference's
`test.py`, whose anomaly score is its negative; its `--use_xent` alternative, the cross-entropy to
uniform, is not offered here), on the classifier fine-tuned to be uniform on auxiliary outliers
(`bench/shared_models/oe.py`).
"""
from dataclasses import dataclass

from bench.method import register_method
from methods.softmax import Softmax


@dataclass
class OE(Softmax):
    """Maximum softmax probability of the classifier fine-tuned with Outlier Exposure."""

    net: str = "oe"


register_method("oe", OE)
