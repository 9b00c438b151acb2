"""A record says which CPU trained its model: the same key trained on two machines need not hold the same weights."""
import torch

from bench import provenance


def test_the_node_records_the_cpu_its_kernels_and_torchs_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cpu = provenance.node()["cpu"]
    finally:
        torch.set_num_threads(before)
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability() and cpu["capability"]
    assert cpu["threads"] == 1
    assert "model" in cpu  # None where the OS does not name it
