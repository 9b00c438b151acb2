"""Shapes and basic behaviour of the classifier backbones, the CVAE and the augmentation."""
import pytest
import torch

from bench.augment import random_crop_flip
from bench.nets.cvae import CVAE
from bench.errors import BenchError
from bench.nets.backbones import BACKBONES, Classifier, build_backbone

SHAPES = [(1, 28), (3, 32), (3, 64)]
# cnn9 is the 28x28 net of the CMG code; resnet18 is for colour images.
CASES = [("cnn4", s) for s in SHAPES] + [("cnn9", (1, 28)), ("cnn9", (3, 32))] + [("resnet18", s) for s in SHAPES[1:]]


def test_registry_lists_backbones():
    assert set(BACKBONES.names()) >= {"cnn4", "cnn9", "resnet18"}
    with pytest.raises(BenchError):
        build_backbone("cnn5", 1, 28)


@pytest.mark.parametrize("name,shape", CASES)
def test_backbone_shapes(name, shape):
    channels, size = shape
    # a narrow resnet keeps the 64x64 case fast; width must change the feature size
    width = 8 if name == "resnet18" else None
    net = build_backbone(name, channels, size, width).eval()
    out = net(torch.rand(2, channels, size, size))
    assert isinstance(net.out_dim, int)
    assert out.shape == (2, net.out_dim)


def test_width_scales_resnet():
    assert build_backbone("resnet18", 3, 32, 8).out_dim == 64
    assert build_backbone("resnet18", 3, 32).out_dim == 512


def test_classifier_features_match_logits():
    torch.manual_seed(0)
    model = Classifier(build_backbone("cnn4", 1, 28), num_classes=7).eval()
    x = torch.rand(5, 1, 28, 28)
    logits, penultimate = model.forward_features(x)
    assert logits.shape == (5, 7) and penultimate.shape == (5, 512)
    assert model.num_classes == 7
    assert (penultimate >= 0).all()
    torch.testing.assert_close(model.final_layer(penultimate), logits)
    torch.testing.assert_close(model(x), logits)


CVAE_CASES = [((1, 28), "conv"), ((3, 32), "conv"), ((3, 32), "resnet")]


@pytest.mark.parametrize("shape,arch", CVAE_CASES)
def test_cvae_shapes(shape, arch):
    torch.manual_seed(0)
    channels, size = shape
    width = 8 if arch == "resnet" else 16
    model = CVAE(channels, size, num_classes=4, arch=arch, width=width)
    x, labels = torch.rand(3, channels, size, size), torch.tensor([0, 3, 1])
    recon, mu, logvar = model(x, labels)
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == (3, model.latent_dim)
    mixed = model.embed(torch.full((3, 4), 0.25))
    images = model.decode(torch.randn(3, model.latent_dim) * 10, mixed)
    assert images.shape == x.shape
    assert images.min() >= 0 and images.max() <= 1
    assert torch.isfinite(model.loss(x, labels))


def test_cvae_rejects_bad_config():
    with pytest.raises(BenchError):
        CVAE(1, 28, 10, arch="resnet")
    with pytest.raises(BenchError):
        CVAE(1, 28, 10, arch="unet")


def test_cvae_overfits_one_batch():
    """Images determined by their class, so the decoder can fit them from the embedding."""
    torch.manual_seed(0)
    model = CVAE(1, 28, num_classes=3, width=8)
    labels = torch.arange(8) % 3
    x = torch.nn.functional.interpolate(torch.rand(3, 1, 7, 7), size=28)[labels]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(x, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


def test_crop_flip_shape_and_determinism():
    x = torch.rand(8, 3, 32, 32)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    again = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, again)
    assert not torch.equal(out, random_crop_flip(x, generator=torch.Generator().manual_seed(2)))


def test_crop_without_padding_only_flips():
    x = torch.rand(64, 2, 9, 9)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert same.any() and mirrored.any()


def test_crop_is_a_shifted_window():
    """Each output image is a window of the zero-padded input, possibly mirrored."""
    x = torch.rand(16, 1, 6, 6) + 1  # no zeros, so padding is recognisable
    p = 2
    out = random_crop_flip(x, padding=p, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(len(x)):
        windows = [padded[i, :, r : r + 6, c : c + 6] for r in range(2 * p + 1) for c in range(2 * p + 1)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
