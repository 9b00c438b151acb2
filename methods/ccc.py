"""CCC's score: Lee, Lee, Lee & Shin, "Training Confidence-calibrated Classifiers for Detecting
Out-of-Distribution Samples", ICLR 2018 (github.com/alinlab/Confident_classifier).

ID score = max_c softmax(f(x))_c (`src/test_detection.py`), the maximum softmax probability, on
the classifier trained jointly with a GAN to be uniform on its samples (`bench/shared_models/ccc.py`).
"""
from dataclasses import dataclass

from bench.method import register_method
from methods.softmax import Softmax


@dataclass
class CCC(Softmax):
    """Maximum softmax probability of the confidence-calibrated classifier."""

    net: str = "ccc"


register_method("ccc", CCC)
