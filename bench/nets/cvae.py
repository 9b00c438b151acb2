"""The conditional VAE of CMG, which generates class-mixed outliers by decoding mixed embeddings.

The class condition enters through a learned embedding of a (possibly soft) one-hot vector,
so `decode` accepts any mixture of class embeddings, not only those of single classes.
Two architectures follow the authors' code: a 2-conv/2-deconv net ("conv", for small
images) and a ResNet18 encoder with a residual + 3-deconv decoder ("resnet").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.nets.backbones import BasicBlock, ResNet18

HIDDEN = 1024


@dataclass
class _Parts:
    """What an architecture contributes: a flat-feature encoder and an image decoder body."""

    encoder: nn.Module
    feature_dim: int
    decoder_shape: tuple[int, int, int]  # (channels, height, width) the decoder body starts from
    decoder: nn.Module  # ends in logits; the sigmoid is applied by CVAE.decode


def _deconv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv_parts(in_channels: int, image_size: int, width: int | None) -> _Parts:
    """Two stride-2 convs down, two stride-2 deconvs up (x4), for sizes divisible by 4."""
    w = width or 64
    side = image_size // 4
    encoder = nn.Sequential(
        nn.Conv2d(in_channels, w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(inplace=True),
        nn.Flatten(),
    )
    decoder = nn.Sequential(*_deconv_bn_relu(2 * w, w), nn.ConvTranspose2d(w, in_channels, 4, 2, 1))
    return _Parts(encoder, 2 * w * side * side, (2 * w, side, side), decoder)


def _resnet_parts(in_channels: int, image_size: int, width: int | None) -> _Parts:
    """ResNet18 encoder; decoder of two residual blocks and three stride-2 deconvs (x8)."""
    w = width or 64
    encoder = ResNet18(in_channels, w)
    channels, side = 4 * w, image_size // 8
    decoder = nn.Sequential(
        BasicBlock(channels, channels),
        BasicBlock(channels, channels),
        *_deconv_bn_relu(channels, channels // 2),
        *_deconv_bn_relu(channels // 2, channels // 4),
        nn.ConvTranspose2d(channels // 4, in_channels, 4, 2, 1),
    )
    return _Parts(encoder, encoder.out_dim, (channels, side, side), decoder)


# name -> (builder, the factor image sizes must be divisible by)
ARCHS: dict[str, tuple[Callable[[int, int, "int | None"], _Parts], int]] = {
    "conv": (_conv_parts, 4),
    "resnet": (_resnet_parts, 8),
}


class CVAE(nn.Module):
    """Conditional VAE; loss = per-pixel MSE + KL / (C*H*W), as in the CMG code."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        latent_dim: int = 32,
        embed_dim: int = 32,
        arch: str = "conv",
        width: int | None = None,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise BenchError(f"unknown CVAE arch {arch!r}; known: {', '.join(ARCHS)}")
        build, factor = ARCHS[arch]
        if image_size % factor:
            raise BenchError(f"CVAE arch {arch!r} needs an image size divisible by {factor}, got {image_size}")
        parts = build(in_channels, image_size, width)
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.image_shape = (in_channels, image_size, image_size)
        self.embedding = nn.Linear(num_classes, embed_dim)
        self.encoder = parts.encoder
        self.enc_hidden = nn.Sequential(nn.Linear(parts.feature_dim + embed_dim, HIDDEN), nn.ReLU(inplace=True))
        self.mu = nn.Linear(HIDDEN, latent_dim)
        self.logvar = nn.Linear(HIDDEN, latent_dim)
        self.dec_input = nn.Sequential(
            nn.Linear(latent_dim + embed_dim, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN, parts.decoder_shape[0] * parts.decoder_shape[1] * parts.decoder_shape[2]),
        )
        self.decoder_shape = parts.decoder_shape
        self.decoder = parts.decoder

    def embed(self, onehot: torch.Tensor) -> torch.Tensor:
        """Class embedding of (soft) one-hot rows (B, K) -> (B, embed_dim)."""
        return self.embedding(onehot)

    def encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc_hidden(torch.cat([self.encoder(x), emb], dim=1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (B, C, H, W)."""
        h = self.dec_input(torch.cat([z, emb], dim=1)).view(-1, *self.decoder_shape)
        return torch.sigmoid(self.decoder(h))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = self.embed(F.one_hot(labels, self.num_classes).to(x.dtype))
        mu, logvar = self.encode(x, emb)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, emb), mu, logvar

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = self(x, labels)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1).mean()
        return F.mse_loss(recon, x) + kl / x[0].numel()
