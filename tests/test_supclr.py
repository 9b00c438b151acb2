"""SupCLR: the SupCon loss by hand, two-view augmentation, and the method end to end."""
from __future__ import annotations

import math

import pytest
import torch

from bench.cli import main
from bench.contrastive import augment, simclr_transform, supcon_loss


def test_supcon_loss_on_a_hand_computed_four_sample_case():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.6, 0.8]])  # the 3rd is normalised to (1, 0)
    labels = torch.tensor([0, 1, 0, 1])
    t = 0.5
    e = lambda s: math.exp(s / t)  # noqa: E731
    # Cosine similarities: s12 = 0, s13 = 1, s14 = 0.6, s23 = 0, s24 = 0.8, s34 = 0.6.
    # Each anchor has one positive: 1<->3 and 2<->4.
    anchor1 = -math.log(e(1) / (e(0) + e(1) + e(0.6)))
    anchor2 = -math.log(e(0.8) / (e(0) + e(0) + e(0.8)))
    anchor3 = -math.log(e(1) / (e(1) + e(0) + e(0.6)))
    anchor4 = -math.log(e(0.8) / (e(0.6) + e(0.8) + e(0.6)))
    expected = (anchor1 + anchor2 + anchor3 + anchor4) / 4
    assert float(supcon_loss(z, labels, t)) == pytest.approx(expected, rel=1e-6)


def test_supcon_averages_over_several_positives_and_skips_anchors_without_one():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])  # anchor 1 has positives 2 and 3; anchor 4 has none
    t = 1.0
    denominator1 = math.exp(1) + math.exp(0) + math.exp(-1)
    anchor1 = -(math.log(math.exp(1) / denominator1) + math.log(math.exp(0) / denominator1)) / 2
    anchor2 = anchor1
    denominator3 = math.exp(0) + math.exp(0) + math.exp(0)
    anchor3 = -(2 * math.log(1 / denominator3)) / 2
    assert float(supcon_loss(z, labels, t)) == pytest.approx((anchor1 + anchor2 + anchor3) / 3, rel=1e-6)


def test_each_image_gets_its_own_augmentation():
    torch.manual_seed(0)
    images = torch.rand(1, 1, 28, 28).expand(8, -1, -1, -1).contiguous()
    views = augment(images, simclr_transform(1, 28))
    assert views.shape == images.shape
    assert len({tuple(view.flatten()[:50].tolist()) for view in views}) == 8  # eight different draws


def test_supclr_scores_and_plus_cmg_e_through_the_cli(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "supclr,energy[net=supclr],supclr+cmg_e", "--protocol", "setting1",
            "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
            "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert len(list((cache / "supclr").iterdir())) == 1  # one network, shared by all three
    assert main(["table", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "supclr original" in text and "supclr +cmg_e" in text
