"""Setting 1 of the CMG paper: near-OOD (open-set) detection within one dataset.

MNIST, Fashion-MNIST, CIFAR-10 and SVHN: 6 known classes in five consecutive partitions
0-5 .. 4-9, the other 4 classes of the test split are OOD. TinyImageNet: 20 known classes
per partition; the paper's last set "160-189" is read as 160-179 so that every partition
has 20 classes (SPEC.md section 2), and its OOD images come from the validation split.
Known classes are relabelled 0..N-1 in ascending order. The auxiliary outlier set is the
offline `natural_patches` (photograph patches, bench/datasets/natural_patches.py).
"""
from bench.protocol import DataRef, OpenSetProtocol, consecutive_partitions, register_protocol

SIX_OF_TEN = consecutive_partitions(width=6, starts=range(5))

register_protocol(
    OpenSetProtocol(
        name="setting1",
        description="CMG Setting 1: near-OOD, known vs unknown classes of one dataset (5 partitions)",
        datasets={
            "mnist": SIX_OF_TEN,
            "fashion_mnist": SIX_OF_TEN,
            "cifar10": SIX_OF_TEN,
            "svhn": SIX_OF_TEN,
            "tinyimagenet": consecutive_partitions(width=20, starts=(0, 40, 80, 120, 160)),
        },
        total_classes={"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "svhn": 10, "tinyimagenet": 200},
        test_split={"tinyimagenet": "val"},
        aux=DataRef("natural_patches", "train"),  # for methods that learn from outliers (OE, MCD, UDG); offline
    )
)
