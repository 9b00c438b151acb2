"""MOODCAT's networks and masking (Yang, Gao, Xu; ECCV 2022), in the [-1, 1] image space.

Paper: ../shared/papers/moodcat.txt; facts from the released code: SPEC.md section 4.

- `random_masks` / `apply_masks`: one random rectangle per image, filled with 0.
- `Synthesizer`: encoder E (masked image -> mu, logvar, z dim 128) and a BigGAN-style
  decoder D(z, y) whose batch norms are class-conditional and whose layers are
  spectrally normalised. `conditional=False` is the paper's unconditional ablation: the
  label is ignored, so every batch norm learns one affine map.
- `UNetDiscriminator`: an image-level logit with a class projection plus a per-pixel
  logit from a decoder with skips (Schonfeld et al., CVPR 2020).
- `PairClassifier` (C_b): scores an (image, synthesis) pair stacked on channels, with a
  projection of the label's embedding.

Every network takes its channel multiplier as `width` and follows the image size:
28x28 (7 -> 14 -> 28), 32x32 (4 -> 8 -> 16 -> 32) and 64x64 (4 -> ... -> 64).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from bench.errors import BenchError

LATENT_DIM = 128
EMBED_DIM = 128
ASPECT_RANGE = (0.5, 2.5)  # height / width of a mask rectangle
FIXED_MASK_RATIO = 0.3  # the paper's "fixed high ratio" ablation (Table 5)

# mask style -> (area ratios while training the generator, area ratios at test time)
MASK_RATIOS: dict[str, tuple[tuple[float, float], tuple[float, float]] | None] = {
    "random": ((0.10, 0.33), (0.15, 0.33)),
    "fixed": ((FIXED_MASK_RATIO, FIXED_MASK_RATIO), (FIXED_MASK_RATIO, FIXED_MASK_RATIO)),
    "none": None,
}


def mask_ratios(style: str, training: bool) -> tuple[float, float] | None:
    """Area-ratio range of a mask style (None: no masking)."""
    if style not in MASK_RATIOS:
        raise BenchError(f"unknown MOODCAT mask {style!r}; choose one of {', '.join(MASK_RATIOS)}")
    ratios = MASK_RATIOS[style]
    return None if ratios is None else ratios[0 if training else 1]


def random_masks(count: int, height: int, width: int, ratios: tuple[float, float],
                 generator: torch.Generator) -> torch.Tensor:
    """(count, 1, H, W) bool masks, True inside one random rectangle per image.

    Area ratio ~ U(ratios), aspect ratio ~ U(0.5, 2.5); the rounded side lengths are
    clamped so that the covered area stays inside `ratios` exactly.
    """
    low, high = ratios
    area = height * width
    ratio = low + (high - low) * torch.rand(count, generator=generator)
    aspect = ASPECT_RANGE[0] + (ASPECT_RANGE[1] - ASPECT_RANGE[0]) * torch.rand(count, generator=generator)
    rows = (ratio * area * aspect).sqrt().round().clamp(1, height)
    cols = (ratio * area / rows).round()
    cols = torch.minimum(cols.clamp(min=(low * area / rows).ceil()), (high * area / rows).floor()).clamp(1, width)
    top = (torch.rand(count, generator=generator) * (height - rows + 1)).floor()
    left = (torch.rand(count, generator=generator) * (width - cols + 1)).floor()
    y = torch.arange(height).view(1, height, 1)
    x = torch.arange(width).view(1, 1, width)
    inside_rows = (y >= top.view(-1, 1, 1)) & (y < (top + rows).view(-1, 1, 1))
    inside_cols = (x >= left.view(-1, 1, 1)) & (x < (left + cols).view(-1, 1, 1))
    return (inside_rows & inside_cols).unsqueeze(1)


def apply_masks(images: torch.Tensor, style: str, training: bool, generator: torch.Generator) -> torch.Tensor:
    """Images in [-1, 1] with one random rectangle each set to 0 (unchanged for style "none")."""
    ratios = mask_ratios(style, training)
    if ratios is None:
        return images
    masks = random_masks(len(images), images.shape[2], images.shape[3], ratios, generator).to(images.device)
    return images.masked_fill(masks, 0.0)


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(bottom width, number of x2 up-blocks): the largest halving that stays at >= 4 pixels."""
    blocks = 0
    while image_size % 2 ** (blocks + 1) == 0 and image_size // 2 ** (blocks + 1) >= 4:
        blocks += 1
    if blocks == 0:
        raise BenchError(f"MOODCAT needs an image size divisible by 2 with at least 8 pixels, got {image_size}")
    return image_size // 2 ** blocks, blocks


def _sn_conv(cin: int, cout: int, kernel: int = 3) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, 1, kernel // 2))


class Encoder(nn.Module):
    """Four convs (w, 2w, 4w, 4w) then linear mu and logvar; the last conv spans the remaining map."""

    def __init__(self, in_channels: int, image_size: int, width: int, latent_dim: int = LATENT_DIM):
        super().__init__()
        side = image_size
        for _ in range(3):
            side = (side + 2 - 4) // 2 + 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * width, 4 * width, side, 1, 0), nn.Flatten(),
        )
        self.mu = nn.Linear(4 * width, latent_dim)
        self.logvar = nn.Linear(4 * width, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain (1 + Linear(e)) and bias (Linear(e)) come from the class embedding."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = spectral_norm(nn.Linear(embed_dim, channels, bias=False))
        self.bias = spectral_norm(nn.Linear(embed_dim, channels, bias=False))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gain = 1 + self.gain(embedding).view(len(x), -1, 1, 1)
        return self.norm(x) * gain + self.bias(embedding).view(len(x), -1, 1, 1)


class UpBlock(nn.Module):
    """BigGAN generator block: CBN, ReLU, upsample, conv, CBN, ReLU, conv; 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int, embed_dim: int):
        super().__init__()
        self.norm1 = ConditionalBatchNorm(cin, embed_dim)
        self.conv1 = _sn_conv(cin, cout)
        self.norm2 = ConditionalBatchNorm(cout, embed_dim)
        self.conv2 = _sn_conv(cout, cout)
        self.shortcut = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        size = (2 * x.shape[2], 2 * x.shape[3])
        h = F.interpolate(F.relu(self.norm1(x, embedding)), size=size)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), embedding)))
        return h + self.shortcut(F.interpolate(x, size=size))


class Decoder(nn.Module):
    """BigGAN-style generator without attention: Linear(z -> 16w x b x b), up-blocks halving channels to w."""

    def __init__(self, out_channels: int, image_size: int, width: int, num_classes: int,
                 latent_dim: int = LATENT_DIM, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.bottom, blocks = upsampling_plan(image_size)
        channels = [16 * width // 2 ** i for i in range(blocks)] + [width]
        self.embedding = nn.Embedding(num_classes, embed_dim)
        self.linear = spectral_norm(nn.Linear(latent_dim, channels[0] * self.bottom ** 2))
        self.blocks = nn.ModuleList(UpBlock(cin, cout, embed_dim) for cin, cout in zip(channels, channels[1:]))
        self.output = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True), _sn_conv(width, out_channels),
                                    nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedding = self.embedding(labels)
        h = self.linear(z).view(len(z), -1, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h, embedding)
        return self.output(h)


class Synthesizer(nn.Module):
    """G = D . E: a masked image in [-1, 1] and a label in, a synthesis in [-1, 1] out."""

    def __init__(self, channels: int, image_size: int, num_classes: int, width: int, conditional: bool = True):
        super().__init__()
        self.conditional = conditional
        self.num_classes = num_classes
        self.encoder = Encoder(channels, image_size, width)
        self.decoder = Decoder(channels, image_size, width, num_classes if conditional else 1)

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """The label the decoder sees: the class, or one constant label for the unconditional ablation."""
        return labels if self.conditional else torch.zeros_like(labels)

    def forward(self, masked: torch.Tensor, labels: torch.Tensor, sample: bool = True):
        """(synthesis, mu, logvar); `sample=False` decodes the mean of q(z | masked image)."""
        mu, logvar = self.encoder(masked)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decoder(z, self.condition(labels)), mu, logvar


class DownBlock(nn.Module):
    """BigGAN discriminator block: (ReLU,) conv, ReLU, conv, average-pool; 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int, preactivation: bool = True, downsample: bool = True):
        super().__init__()
        self.preactivation = preactivation
        self.downsample = downsample
        self.conv1 = _sn_conv(cin, cout)
        self.conv2 = _sn_conv(cout, cout)
        self.shortcut = _sn_conv(cin, cout, 1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        return h + self._pool(self.shortcut(x))


class SkipUpBlock(nn.Module):
    """U-Net decoder block: upsample to the skip's size, conv, ReLU, conv; 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _sn_conv(cin, cout)
        self.conv2 = _sn_conv(cout, cout)
        self.shortcut = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size)
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + self.shortcut(x)


class UNetDiscriminator(nn.Module):
    """Down-blocks C -> w -> 4w -> 16w with a projection logit; up-blocks with skips to a per-pixel logit."""

    def __init__(self, channels: int, num_classes: int, width: int):
        super().__init__()
        widths = [width, 4 * width, 16 * width]
        self.down = nn.ModuleList([
            DownBlock(channels, widths[0], preactivation=False),
            DownBlock(widths[0], widths[1]),
            DownBlock(widths[1], widths[2]),
        ])
        self.image_logit = spectral_norm(nn.Linear(widths[2], 1))
        self.embedding = spectral_norm(nn.Embedding(num_classes, widths[2]))
        self.up = nn.ModuleList([
            SkipUpBlock(widths[2], widths[1]),
            SkipUpBlock(2 * widths[1], widths[0]),
            SkipUpBlock(2 * widths[0], widths[0]),
        ])
        self.pixel_logit = _sn_conv(widths[0], 1, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image-level logit (B,), per-pixel logit (B, 1, H, W))."""
        skips, h = [], x
        for block in self.down:
            h = block(h)
            skips.append(h)
        pooled = F.relu(h).sum(dim=(2, 3))
        image = self.image_logit(pooled).squeeze(1) + (self.embedding(labels) * pooled).sum(dim=1)
        h = self.up[0](h, skips[1].shape[2:])
        h = self.up[1](torch.cat([h, skips[1]], dim=1), skips[0].shape[2:])
        h = self.up[2](torch.cat([h, skips[0]], dim=1), x.shape[2:])
        return image, self.pixel_logit(F.relu(h))


class SelfAttention(nn.Module):
    """SAGAN self-attention; gamma starts at 0 so the block starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.query = _sn_conv(channels, max(channels // 8, 1), 1)
        self.key = _sn_conv(channels, max(channels // 8, 1), 1)
        self.value = _sn_conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)
        key = self.key(x).flatten(2)
        attention = torch.softmax(query @ key / math.sqrt(key.shape[1]), dim=-1)
        out = (self.value(x).flatten(2) @ attention.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.gamma * out


class PairClassifier(nn.Module):
    """C_b: residual SN blocks on [image, synthesis] (2C channels) with one self-attention block;
    logit = Linear(features) + <embedding(y), features>, positive for a consistent pair."""

    def __init__(self, channels: int, num_classes: int, width: int):
        super().__init__()
        self.body = nn.Sequential(
            DownBlock(2 * channels, width, preactivation=False),
            SelfAttention(width),
            DownBlock(width, width),
            DownBlock(width, width, downsample=False),
            DownBlock(width, width, downsample=False),
        )
        self.logit = spectral_norm(nn.Linear(width, 1))
        self.embedding = spectral_norm(nn.Embedding(num_classes, width))

    def forward(self, images: torch.Tensor, syntheses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = F.relu(self.body(torch.cat([images, syntheses], dim=1))).sum(dim=(2, 3))
        return self.logit(features).squeeze(1) + (self.embedding(labels) * features).sum(dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of images in [0, 1] with a Gaussian window (Wang et al. 2004; valid padding)."""
    window = min(window, x.shape[2], x.shape[3])
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    gauss = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    gauss = gauss / gauss.sum()
    kernel = (gauss[:, None] * gauss[None, :]).expand(x.shape[1], 1, window, window).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)), averaged over latent dimensions and the batch."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean()
