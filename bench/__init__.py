"""bench: a harness that compares OOD detection methods for image classifiers.

Heavy libraries (torch, ray, pandas) are imported where they are used, so that listing
methods or printing help stays fast.
"""
__version__ = "0.1.0"


def __getattr__(name):
    """`bench.evaluate(model, protocol, methods)`, imported on first use."""
    if name == "evaluate":
        from bench.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
