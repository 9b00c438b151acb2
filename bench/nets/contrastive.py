"""The network of the contrastive methods (SupCLR, CSI): an encoder with a projection head for
the contrastive loss, an optional shift-prediction head (CSI's rotations), and a linear
classifier trained on the frozen encoder, which is the network contract's final layer.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.nets.backbones import build_backbone


class ContrastiveNet(nn.Module):
    """Encoder + projector (out_dim -> out_dim -> `projection`) + shift head + linear classifier."""

    def __init__(self, arch: str, in_channels: int, image_size: int, width: int | None, num_classes: int,
                 projection: int = 128, shifts: int = 0):
        super().__init__()
        self.backbone = build_backbone(arch, in_channels, image_size, width)
        dim = self.backbone.out_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection))
        self.shift_head = nn.Linear(dim, shifts) if shifts else None
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, encoder features): the features are the linear classifier's input."""
        features = self.backbone(x)
        return self.classifier(features), features

    @property
    def final_layer(self) -> nn.Linear:
        return self.classifier
