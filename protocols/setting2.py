"""Setting 2 of the CMG paper: far-OOD, an ID CIFAR dataset against whole other datasets.

ID CIFAR-10: SVHN test, LSUN (resize), LSUN-FIX, TinyImageNet (resize), ImageNet-FIX and
CIFAR-100 test; ID CIFAR-100: the same with CIFAR-10 (SPEC.md section 2). The FIX sets get
CSI's construction, Resize(256), CenterCrop(256), Resize(32); the released sets are already
32x32 and pass through unchanged.
"""
from bench.preprocess import Preprocess
from bench.protocol import DataRef, FarOODProtocol, FarOODSetup, register_protocol

FIX = Preprocess(32, 3, resize=256, crop=256)


def _setup(id_name: str, other_cifar: str) -> FarOODSetup:
    return FarOODSetup(
        id_train=DataRef(id_name, "train"),
        id_test=DataRef(id_name, "test"),
        ood_tests={
            "svhn": DataRef("svhn", "test"),
            "lsun_resize": DataRef("lsun_resize", "test"),
            "lsun_fix": DataRef("lsun_fix", "test", preprocess=FIX),
            "tinyimagenet_resize": DataRef("tinyimagenet_resize", "test"),
            "imagenet_fix": DataRef("imagenet_fix", "test", preprocess=FIX),
            other_cifar: DataRef(other_cifar, "test"),
        },
    )


register_protocol(
    FarOODProtocol(
        name="setting2",
        description="CMG Setting 2: far-OOD, CIFAR-10/100 against SVHN, LSUN, LSUN-FIX, TinyImageNet, ImageNet-FIX, the other CIFAR",
        datasets={"cifar10": _setup("cifar10", "cifar100"), "cifar100": _setup("cifar100", "cifar10")},
    )
)
