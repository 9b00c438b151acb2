"""The far-OOD test sets of CMG Setting 2 that torchvision cannot download: image folders.

LSUN (resize) and TinyImageNet (resize) are the 10,000-image 32x32 sets released with ODIN;
LSUN-FIX and ImageNet-FIX were released with CSI, built by Resize(256), CenterCrop(256),
Resize(32) (the protocol applies that recipe, which leaves the released 32x32 images as they
are). Each is read from `<root>/<folder>/` (any depth of sub-folders, every image file).
Images carry no class (-1): every one is OOD.
"""
from __future__ import annotations

from pathlib import Path

from bench.data import DatasetSource, ImageFiles, register_dataset
from bench.datasets._common import image_folder

ODIN = "the ODIN repository's README (github.com/facebookresearch/odin)"
CSI = "the CSI repository's README (github.com/alinlab/CSI)"

# name, folder under the data root, archive, where it is linked, description
FOLDERS = (
    ("lsun_resize", "LSUN_resize", "LSUN_resize.tar.gz", ODIN,
     "LSUN test images downsampled to 32x32 (ODIN's 'LSUN (resize)', 10,000 images)"),
    ("tinyimagenet_resize", "Imagenet_resize", "Imagenet_resize.tar.gz", ODIN,
     "Tiny ImageNet test images downsampled to 32x32 (ODIN's 'TinyImageNet (resize)', 10,000 images)"),
    ("lsun_fix", "LSUN_fix", "LSUN_fix", CSI,
     "LSUN, 1,000 images from each of 10 scene classes, Resize(256)/CenterCrop(256)/Resize(32) (CSI)"),
    ("imagenet_fix", "Imagenet_fix", "Imagenet_fix", CSI,
     "ImageNet-30 minus airliner, ambulance, parking meter, schooner, 10,000 images, "
     "Resize(256)/CenterCrop(256)/Resize(32) (CSI)"),
)


def _source(name: str, folder: str, archive: str, linked: str, description: str) -> DatasetSource:
    how_to_obtain = f"download {archive} linked from {linked} and extract it so that <root>/{folder}/ holds the images"

    def load(root: Path, split: str) -> ImageFiles:
        return image_folder(root / folder, f"{name} ({folder}/)", how_to_obtain, (3, 32, 32))

    return DatasetSource(
        name=name, num_classes=0, image_shape=(3, 32, 32), splits=("test",), load=load,
        how_to_obtain=how_to_obtain, locations=lambda root: (root / folder,), description=description,
    )


for entry in FOLDERS:
    register_dataset(_source(*entry))
