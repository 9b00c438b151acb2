"""SC-OOD (Yang et al., ICCV 2021), the benchmark MOODCAT reports on, read from its image lists.

ID CIFAR-10 or CIFAR-100 (the benchmark's own train/test lists) against SVHN, the other
CIFAR, TinyImageNet, Texture, LSUN and Places365; every image goes through SC-OOD's test
transform, Resize(32) + CenterCrop(32), bilinear. The unlabelled TinyImageNet training list
is the task's `extra_train`, for methods that learn from outliers.

Two evaluations, under two names:
- `scood`: by `sc_label`, the SC-OOD protocol: an OOD-set image whose content belongs to an
  ID class counts as ID in that set's metrics;
- `scood_label`: by `label`, plain dataset-level OOD: every image of an OOD set is OOD.
"""
from bench.preprocess import Preprocess
from bench.protocol import DataRef, FarOODProtocol, FarOODSetup, register_protocol

SCOOD_TEST = Preprocess(32, 3)  # Resize(32), CenterCrop(32)
OOD_SETS = ("svhn", "tin", "texture", "lsun", "places365")


def _setup(id_name: str, other_cifar: str, semantic: bool) -> FarOODSetup:
    lists = f"scood_{id_name}"
    return FarOODSetup(
        id_train=DataRef(lists, f"train_{id_name}", preprocess=SCOOD_TEST),
        id_test=DataRef(lists, f"test_{id_name}", preprocess=SCOOD_TEST),
        ood_tests={name: DataRef(lists, f"test_{name}", preprocess=SCOOD_TEST, labelled_is_id=semantic)
                   for name in (other_cifar, *OOD_SETS)},
        extra_train=DataRef(lists, "train_tin", preprocess=SCOOD_TEST),
    )


for protocol, semantic, evaluation in (("scood", True, "by sc_label: OOD-set images of an ID class count as ID"),
                                       ("scood_label", False, "by label: every OOD-set image is OOD")):
    register_protocol(
        FarOODProtocol(
            name=protocol,
            description=f"SC-OOD benchmark (MOODCAT), evaluated {evaluation}",
            datasets={"cifar10": _setup("cifar10", "cifar100", semantic),
                      "cifar100": _setup("cifar100", "cifar10", semantic)},
        )
    )
