"""Shared models, one module each; every module registers itself with `register_shared_model`."""
