"""What the contrastive methods (SupCLR, CSI) share: SimCLR augmentations and the SupCon loss.

The augmentations are torchvision.transforms.v2 applied image by image on the training
device, so every image of a batch gets its own random crop, flip and colour jitter (a v2
transform called on a whole batch would draw one set of parameters for all of it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def simclr_transform(channels: int, size: int, crop_scale: float = 0.08):
    """SimCLR's augmentation: resized crop (scale from `crop_scale` to 1), horizontal flip,
    colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8 and grayscale with p=0.2 (colour images only)."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, scale=(crop_scale, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    if channels == 3:
        steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
    else:  # saturation and hue have no meaning for one channel
        steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4)], p=0.8)]
    return v2.Compose(steps)


def augment(images: torch.Tensor, transform) -> torch.Tensor:
    """`transform` applied to each image of a float (B, C, H, W) batch with its own random draws."""
    return torch.stack([transform(image) for image in images])


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out), averaged over anchors.

    For anchor i with positives P(i) (other samples with its label) and all others A(i):
    -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t) ),
    with z the L2-normalised embeddings. Labels that are image indices give SimCLR's NT-Xent.
    Anchors without a positive are left out.
    """
    z = F.normalize(embeddings, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(1)
    has_positive = counts > 0
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)[has_positive] / counts[has_positive]
    return -mean_log_prob.mean()
