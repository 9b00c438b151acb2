"""CAC: the class-anchor loss and the score by hand, the class means, and the method end to end."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.data import ImageSet
from bench.method import FitContext, MethodSpec
from bench.recipes import recipe_for
from bench.shared_models.cac import cac_loss
from methods.cac import CAC, cac_score, correct_class_means


def test_cac_loss_on_a_hand_computed_case():
    """alpha = 2: anchors (2,0,0), (0,2,0), (0,0,2); Euclidean distances, not squared."""
    outputs = torch.tensor([[2.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    labels = torch.tensor([0, 2])
    # Sample 1 sits on its anchor: d = (0, sqrt 8, sqrt 8).
    tuplet1 = math.log(1 + 2 * math.exp(0 - math.sqrt(8)))
    anchor1 = 0.0
    # Sample 2: d = (sqrt(1+4), sqrt(1+0), sqrt(1+4+4)) = (sqrt 5, 1, 3), its class is 2 (d_y = 3).
    tuplet2 = math.log(1 + math.exp(3 - math.sqrt(5)) + math.exp(3 - 1))
    anchor2 = 3.0
    lam = 0.5
    expected = (tuplet1 + tuplet2) / 2 + lam * (anchor1 + anchor2) / 2
    assert float(cac_loss(outputs, labels, alpha=2.0, lam=lam)) == pytest.approx(expected, rel=1e-6)
    # The defaults are the paper's alpha = 10, lambda = 0.1: both samples at distance 10 from every anchor.
    zero = torch.zeros(2, 3)
    assert float(cac_loss(zero, labels)) == pytest.approx(math.log(3) + 0.1 * 10, rel=1e-6)


def test_cac_loss_pulls_toward_the_own_anchor():
    outputs = torch.tensor([[1.0, 1.0, 0.0]], requires_grad=True)
    cac_loss(outputs, torch.tensor([0]), alpha=10.0).backward()
    assert outputs.grad[0, 0] < 0 < outputs.grad[0, 1]  # descent raises the true output, lowers the other


def test_cac_score_on_a_hand_computed_case():
    means = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    outputs = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1.5, 0.0, 0.0]])
    # Row 1 sits on mean 0: d_0 = 0, so the minimum product is 0.
    # Row 2: d = (5, 4, 3); softmin_c = exp(-d_c) / (e^-5 + e^-4 + e^-3).
    z = math.exp(-5) + math.exp(-4) + math.exp(-3)
    products = [d * (1 - math.exp(-d) / z) for d in (5.0, 4.0, 3.0)]
    # Row 3: d = (1.5, 1.5, sqrt(1.5^2 + 16)).
    d3 = math.sqrt(1.5**2 + 16)
    z3 = 2 * math.exp(-1.5) + math.exp(-d3)
    row3 = 1.5 * (1 - math.exp(-1.5) / z3)
    expected = torch.tensor([-0.0, -min(products), -row3])
    assert torch.allclose(cac_score(outputs, means), expected, atol=1e-6)
    assert min(products) == products[2]  # the nearest mean gives the smallest product here


class _Identity(nn.Module):
    """A network whose outputs are its (flattened) inputs."""

    def forward_features(self, x):
        return x.flatten(1), x.flatten(1)


def test_prediction_is_the_nearest_class_mean_not_the_largest_output():
    method = CAC()
    method.classifier_ = _Identity()
    method.means_ = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[3.0, 4.0, 0.0], [2.0, 0.5, 0.0]]).view(2, 1, 1, 3)
    prediction = method.predict(x)
    assert prediction.label.tolist() == [2, 1]  # (3, 4, 0): largest output is class 1, nearest mean is 2
    assert torch.allclose(prediction.score, cac_score(x.flatten(1), method.means_))


def test_class_means_use_only_correctly_classified_training_images():
    outputs = torch.tensor([[5.0, 1.0], [3.0, 0.0], [0.0, 2.0], [1.0, 4.0], [6.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])  # rows 3 and 5 are misclassified
    method = CAC()
    method.fit_outputs(outputs, None, labels)
    assert method.means_.tolist() == [[4.0, 0.5], [1.0, 4.0]]


def test_a_class_without_a_correct_image_falls_back_to_all_its_images():
    means = correct_class_means(torch.tensor([[5.0, 1.0], [3.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 1, 1]), 2)
    assert means.tolist() == [[5.0, 1.0], [2.5, 0.5]]


class _Probe(nn.Module):
    """Two outputs: 1 + the mean of channel 0's left pixel column, and 3 x the mean of channel 1."""

    def forward_features(self, x):
        outputs = torch.stack([1 + x[:, 0, :, 0].mean(1), 3 * x[:, 1].mean((1, 2))], 1)
        return outputs, outputs


def _fit_means(augment: bool) -> torch.Tensor:
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    images[:2, 0, :, :2] = 255  # class 0: the left half of channel 0 is white; flipped, its left column is black
    images[2, 1] = 255  # class 1: channel 1 is white, flipped or not
    train = ImageSet(images, torch.tensor([0, 0, 1]))
    recipe = recipe_for("smoke", (3, 32, 32), augment=augment)
    ctx = FitContext(None, train, {"cac": _Probe()}, recipe, 0, torch.device("cpu"))
    return CAC().fit(ctx).means_


def test_flipped_training_images_count_for_datasets_trained_with_flips():
    assert _fit_means(augment=False).tolist() == [[2.0, 0.0], [1.0, 3.0]]
    # Flipped, class 0 gives (1, 0), still classified correctly: its mean moves halfway.
    assert _fit_means(augment=True).tolist() == [[1.5, 0.0], [1.0, 3.0]]


def test_cac_end_to_end_at_smoke_scale(smoke_context, smoke_test_images):
    method = MethodSpec("cac").build().fit(smoke_context(MethodSpec("cac")))
    id_images, id_labels, ood_images = smoke_test_images
    id_prediction, ood_prediction = method.predict(id_images), method.predict(ood_images)
    assert torch.isfinite(id_prediction.score).all() and torch.isfinite(ood_prediction.score).all()
    assert (id_prediction.score <= 0).all()  # minus a product of non-negative factors
    assert (id_prediction.label == id_labels).float().mean() > 0.5


def test_native_score_post_hoc_score_and_cmg_share_one_cac_network(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "cac,energy[net=cac],cac+cmg_e", "--protocol", "setting1",
            "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
            "--cpus-per-trial", "1", "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert len(list((cache / "cac").iterdir())) == 1
    assert not (cache / "classifier").exists()  # nothing here reads the cross-entropy classifier
    assert main(["table", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cac original" in text and "cac +cmg_e" in text
