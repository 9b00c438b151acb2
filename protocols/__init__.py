"""Protocols, one module each; every module registers itself with `bench.protocol.register_protocol`."""
