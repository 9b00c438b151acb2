"""OSRCI: the counterfactual search, the unknown class as a fixed-zero logit, samples, and the CLI end to end."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.method import MethodSpec
from bench.nets.contract import has_final_layer
from bench.shared import SHARED_MODELS
from bench.shared_models.osrci import Generator, Search, counterfactual_codes, known_mass, open_set_loss
from methods.osrci import OSRCI


def test_counterfactuals_lower_the_known_class_mass_of_the_classifier_they_descend():
    torch.manual_seed(0)
    generator = Generator(1, 8, 2, 3).eval()  # a 3-channel 4x4 code -> an 8x8 image
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        classifier[1].weight.mul_(20)  # confident, so there is known-class mass to remove
    z0 = nn.functional.normalize(torch.randn(6, 3, 4, 4), dim=1)
    z = counterfactual_codes(generator, classifier, z0, Search(steps=30, step_size=0.1, distance_weight=0.1))
    with torch.no_grad():
        before, after = known_mass(classifier(generator(z0))), known_mass(classifier(generator(z)))
    assert (after < before - 0.1).all(), (before, after)
    assert torch.allclose(z.norm(dim=1), torch.ones(6, 4, 4))  # every position stays on the unit sphere
    again = counterfactual_codes(generator, classifier, z0, Search(steps=30, step_size=0.1, distance_weight=0.1))
    assert torch.equal(z, again)


class _Logits(nn.Module):
    """A network whose logits are its flattened inputs."""

    def forward_features(self, x):
        return x.flatten(1), x.flatten(1)


def test_the_unknown_class_is_a_fixed_zero_logit_in_training_and_in_the_score():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2), math.log(5)]])
    # Row 1: S = 3, P(unknown) = 1/4. Row 2: S = 1 + 2 + 5 = 8, P(unknown) = 1/9.
    method = OSRCI()
    method.classifier_ = _Logits()
    prediction = method.predict(logits.view(2, 1, 1, 3))
    assert prediction.score.tolist() == pytest.approx([-1 / 4, -1 / 9], rel=1e-6)
    assert prediction.label.tolist()[1] == 2  # the largest known logit, never the unknown class
    # Training: ID row 2 with label 1 gives -log(2 / 9); counterfactual row 1 gives -log(1 / 4).
    loss = open_set_loss(logits[1:], torch.tensor([1]), logits[:1])
    assert float(loss) == pytest.approx(-math.log(2 / 9) - math.log(1 / 4), rel=1e-6)


def test_samples_are_counterfactual_images_of_the_task_shape(smoke_context, smoke_task):
    model = smoke_context(MethodSpec("osrci")).models["osrci"]
    assert has_final_layer(model) and model.final_layer.out_features == smoke_task.num_classes
    draw = SHARED_MODELS.get("osrci").samples
    images = draw(model, smoke_task, 5, torch.Generator().manual_seed(0))
    assert images.shape == (5, *smoke_task.image_shape)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, draw(model, smoke_task, 5, torch.Generator().manual_seed(0)))


def test_native_score_post_hoc_score_and_cmg_share_one_osrci_network(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "osrci,osrci+cmg_e,energy[net=osrci]", "--protocol", "setting1",
            "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
            "--cpus-per-trial", "1", "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert len(list((cache / "osrci").iterdir())) == 1
    assert main(["table", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "osrci original" in text and "osrci +cmg_e" in text
