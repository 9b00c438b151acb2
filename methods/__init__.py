"""OOD detection methods, one module each; every module registers itself with `register_method`."""
