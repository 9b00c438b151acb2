"""The two axes: a trained network and a score on it; `net=`, `<network>+cmg_e`, and CMG's stage 2 on any network."""
from __future__ import annotations

import copy

import pytest
import torch

from bench.errors import BenchError
from bench.method import MethodSpec, parse_methods
from methods.cmg import EnergyObjective, FineTune, fine_tune, generate_pseudo_ood
from methods.energy import negative_energy


def test_plus_is_the_same_method_as_the_net_option():
    (plus,), (option,) = parse_methods("supclr+cmg_e"), parse_methods("cmg_e[net=supclr]")
    assert plus == option and plus.label == option.label == "supclr+cmg_e"
    assert plus.requires() == ("supclr", "cvae")
    assert parse_methods("energy[net=supclr]")[0].label == "energy[net=supclr]"
    assert parse_methods("react+cmg_e[sigma=3]")[0].label == "react+cmg_e[sigma=3]"


def test_scores_take_any_network_and_methods_that_provide_one():
    assert MethodSpec("energy", (("net", "supclr"),)).requires() == ("supclr",)
    assert MethodSpec("knn", (("net", "react"),)).requires() == ("classifier",)  # ReAct's rectified classifier
    assert MethodSpec("energy").requires() == ("classifier",)


@pytest.mark.parametrize("text, message", [
    ("cvae+cmg_e", "'cvae' has no final linear layer"),
    ("energy[net=moodcat_generator]", "'moodcat_generator' has no final linear layer"),
    ("energy[net=nothing]", "unknown network 'nothing'"),
    ("moodcat+cmg_e", "unknown network 'moodcat'"),
    ("supclr+cmg_e[net=classifier]", "the same option twice"),
])
def test_a_network_that_cannot_be_scored_or_tuned_is_refused_in_one_line(text, message):
    with pytest.raises(BenchError, match=message):
        parse_methods(text)


def _stage2(ctx, network, epochs=2):
    images, labels = ctx.train_images()[:1000], ctx.train_labels()[:1000]
    pseudo = generate_pseudo_ood(ctx.models["cvae"], 1000, 5.0, torch.Generator().manual_seed(3), ctx.device)
    objective = EnergyObjective(0.1, 1.0, (20.0, 80.0))
    tuned = fine_tune(network, images, labels, pseudo, objective, FineTune(epochs, 1e-3, 128),
                      torch.Generator().manual_seed(0), tune="last")
    return tuned, images, pseudo


def _gap(network, id_images, pseudo):
    with torch.no_grad():
        return float(negative_energy(network.forward_features(id_images)[0]).mean()
                     - negative_energy(network.forward_features(pseudo)[0]).mean())


def test_stage2_on_another_network_tunes_only_its_final_layer(smoke_context):
    ctx = smoke_context(MethodSpec("cmg_e", (("net", "supclr"),)))
    network = ctx.models["supclr"]
    before = copy.deepcopy(network.state_dict())
    tuned, id_images, pseudo = _stage2(ctx, network)
    for name, tensor in network.state_dict().items():  # the cached network itself is untouched
        assert torch.equal(tensor, before[name]), name
    inner = tuned.features.network.state_dict()  # the frozen copy under the tuned layer
    for name, tensor in inner.items():
        if not name.startswith("classifier."):
            assert torch.equal(tensor, before[name]), f"stage 2 changed {name}"
    assert not torch.equal(tuned.final_layer.weight, before["classifier.weight"])
    assert _gap(tuned, id_images, pseudo) > _gap(network, id_images, pseudo)
    assert tuned.forward_features(id_images[:4])[0].shape == (4, ctx.task.num_classes)  # still a network


def test_react_plus_cmg_e_keeps_the_clipping_in_the_forward_pass(smoke_context):
    spec = MethodSpec("cmg_e", (("epochs", 1), ("net", "react")))
    ctx = smoke_context(spec)
    method = spec.build().fit(ctx)
    rectified = method.network_.features.network
    assert type(rectified).__name__ == "Rectified"
    _, penultimate = method.network_.forward_features(ctx.train_images()[:200])
    assert float(penultimate.max()) <= rectified.threshold + 1e-6


def test_a_network_without_a_final_linear_layer_is_refused(smoke_context):
    ctx = smoke_context()

    class Opaque(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :6]

    with pytest.raises(BenchError, match="has none"):
        _stage2(ctx, Opaque())


def test_scores_read_the_fine_tuned_network(smoke_context):
    """CMG-e's tuned network meets the contract, so a post-hoc score can read it: `knn[net=cmg_e]`."""
    spec = MethodSpec("knn", (("net", "cmg_e"),))
    method = spec.build().fit(smoke_context(spec))
    score = method.predict(smoke_context().train_images()[:8]).score
    assert score.shape == (8,) and torch.isfinite(score).all()
