"""bench: a harness that compares OOD detection methods for image classifiers.

Heavy libraries (torch, ray, pandas) are imported where they are used, so that listing
methods or printing help stays fast.
"""
__version__ = "0.1.0"
