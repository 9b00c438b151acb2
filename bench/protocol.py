"""Protocols as data: each one expands into tasks (ID train, ID test, named OOD test sets).

A protocol module in `protocols/` registers a protocol object. The runner only ever sees
`Task`s, so a new protocol never needs a change to the runner. Two kinds exist:
`OpenSetProtocol` (known vs unknown classes, possibly from a second dataset) and
`FarOODProtocol` (an ID dataset against whole other datasets).

Every task also has validation data for choosing anything that must not be chosen on test
data (a sweep's hyperparameters, MOODCAT's calibration): an ID validation split held out from
the ID training split (`Holdout`: seeded, 10% by default, so no model trains on it) and
validation OOD sets that are disjoint from the task's test OOD sets, as OpenOOD v1.5's APS
prescribes. By default those are two synthetic sets no protocol tests on (`VALIDATION_OOD`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
import torch

from bench.data import DATASETS, ImageSet
from bench.errors import BenchError
from bench.preprocess import Preprocess
from bench.registry import Registry


@dataclass(frozen=True)
class Holdout:
    """A seeded `fraction` of a split's images (after class selection) kept out of training for validation.

    `held` picks the side: the held-out images (the validation split) or the rest (the training split).
    The seed is fixed per protocol, not per trial, so every seed's models train on the same images.
    """

    fraction: float
    seed: int = 0
    held: bool = False

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise BenchError(f"a validation hold-out must be a fraction strictly between 0 and 1, not {self.fraction}")

    def apply(self, data: ImageSet) -> ImageSet:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))
        cut = int(round(self.fraction * len(data)))
        keep = (order[:cut] if self.held else order[cut:]).sort().values
        return ImageSet(data.images[keep], data.labels[keep])


ID_VALIDATION = Holdout(0.1, seed=0)


@dataclass(frozen=True)
class DataRef:
    """A view of one split of a registered dataset, as a task uses it.

    With `classes`, only those classes are kept and relabelled 0..len-1 in the given order.
    With `preprocess`, images are brought to its shape (bench.preprocess). With
    `labelled_is_id` (an OOD set only), images that carry an ID class (label >= 0, SC-OOD's
    `sc_label`) count as ID in that set's metrics; otherwise every image of an OOD set is OOD.
    With `holdout`, one side of a seeded hold-out of the selected images (`Holdout`).
    """

    dataset: str
    split: str
    classes: tuple[int, ...] | None = None
    preprocess: Preprocess | None = None
    labelled_is_id: bool = False
    holdout: Holdout | None = None

    def describe(self) -> dict:
        """What cache keys and trial ids are built from; options appear only when set, so old ids hold."""
        described = {"dataset": self.dataset, "split": self.split,
                     "classes": list(self.classes) if self.classes else None}
        if self.preprocess:
            described["preprocess"] = self.preprocess.describe()
        if self.labelled_is_id:
            described["labelled_is_id"] = True
        if self.holdout:
            described["holdout"] = {"fraction": self.holdout.fraction, "seed": self.holdout.seed,
                                    "held": self.holdout.held}
        return described

    def select(self, data: ImageSet) -> ImageSet:
        """This ref's images of its loaded split: its classes, then its side of the hold-out."""
        data = data.select(self.classes)
        return self.holdout.apply(data) if self.holdout else data

    def split_off(self, holdout: Holdout | None) -> tuple["DataRef", "DataRef | None"]:
        """(training ref, validation ref): this ref without and with the images `holdout` keeps out."""
        if holdout is None:
            return self, None
        return replace(self, holdout=replace(holdout, held=False)), replace(self, holdout=replace(holdout, held=True))

    def image_shape(self) -> tuple[int, int, int] | None:
        return self.preprocess.shape if self.preprocess else DATASETS.get(self.dataset).image_shape

    def ood_mask(self, labels: np.ndarray) -> np.ndarray:
        """Which images of this OOD set are OOD; the others join the ID test images for its metrics."""
        return labels < 0 if self.labelled_is_id else np.ones(len(labels), dtype=bool)


@dataclass(frozen=True)
class Task:
    """One evaluation unit: a model is trained on `id_train` and tested on the rest.

    `extra_train` is the auxiliary set: unlabelled training data (labels -1) for methods that
    learn from outliers; it may be neither a test nor a validation OOD set, nor hold the unknown
    classes. `skipped_ood_sets` names the OOD sets left out because their data was missing.
    `id_val` (held out from the ID training split) and `ood_vals` are for choices that must not
    see test data; nothing trains on them.
    """

    protocol: str
    dataset: str
    partition: str
    id_train: DataRef
    id_test: DataRef
    ood_tests: Mapping[str, DataRef]
    num_classes: int
    extra_train: DataRef | None = None
    skipped_ood_sets: tuple[str, ...] = ()
    id_val: DataRef | None = None
    ood_vals: Mapping[str, DataRef] = field(default_factory=dict)

    def __post_init__(self):
        tested = {(ref.dataset, ref.split) for ref in self.ood_tests.values()}
        clash = [name for name, ref in self.ood_vals.items() if (ref.dataset, ref.split) in tested]
        if clash:
            raise BenchError(f"task {self.name}: validation OOD set {', '.join(clash)} is also a test OOD set; "
                             "validation sets must be disjoint from test sets")
        aux = self.extra_train
        if aux is None:
            return
        for kind, sets in (("test", self.ood_tests), ("validation", self.ood_vals)):
            for name, ref in sets.items():
                if (ref.dataset, ref.split) == (aux.dataset, aux.split):
                    raise BenchError(f"task {self.name}: the auxiliary set {aux.dataset} ({aux.split}) is its {kind} OOD "
                                     f"set {name}; training on it would be training on {kind} data")
                if ref.classes is not None and ref.dataset == aux.dataset:
                    raise BenchError(f"task {self.name}: the auxiliary set {aux.dataset} ({aux.split}) holds the "
                                     f"unknown classes of its {kind} OOD set {name}; choose another --aux")

    @property
    def name(self) -> str:
        return f"{self.protocol}/{self.dataset}/{self.partition}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.id_train.image_shape()

    def validation_refs(self) -> list[DataRef]:
        return [*([self.id_val] if self.id_val else []), *self.ood_vals.values()]

    def required_refs(self) -> list[DataRef]:
        """The data a task cannot run without (a test OOD set can be skipped instead)."""
        return [self.id_train, self.id_test, *([self.extra_train] if self.extra_train else []), *self.validation_refs()]

    def data_refs(self, aux: bool = True) -> list[DataRef]:
        """Every set the task names; without the auxiliary set when `aux` is False (for what does not train on it)."""
        return [self.id_train, self.id_test, *self.ood_tests.values(),
                *([self.extra_train] if self.extra_train and aux else []), *self.validation_refs()]

    def with_aux(self, dataset: str | None) -> "Task":
        """This task with another auxiliary set (None: none), fitted to the ID images' shape: its training split
        when it has one, else its only split."""
        if dataset is None:
            return replace(self, extra_train=None)
        source = DATASETS.get(dataset)
        split = "train" if "train" in source.splits else source.splits[0]
        return replace(self, extra_train=DataRef(dataset, split, preprocess=Preprocess.to_shape(self.image_shape)))

    def without(self, ood_sets: Sequence[str]) -> "Task":
        """This task minus some OOD sets, which are recorded as skipped."""
        kept = {name: ref for name, ref in self.ood_tests.items() if name not in ood_sets}
        skipped = tuple(sorted({*self.skipped_ood_sets, *(n for n in ood_sets if n in self.ood_tests)}))
        return replace(self, ood_tests=kept, skipped_ood_sets=skipped)


def _check_choice(protocol: str, available: Mapping, datasets, partitions, partitions_of) -> list[str]:
    """The datasets asked for (default: all), after checking every dataset and partition name exists."""
    chosen = list(datasets) if datasets else list(available)
    for name in chosen:
        if name not in available:
            raise BenchError(f"protocol {protocol!r} has no dataset {name!r}; it has {', '.join(available)}")
        known = partitions_of(name)
        for wanted in partitions or []:
            if wanted not in known:
                raise BenchError(
                    f"dataset {name!r} in protocol {protocol!r} has no partition {wanted!r}; "
                    f"partitions are {', '.join(known)}"
                )
    return chosen


# Validation OOD sets of every protocol unless it names its own: synthetic, and tested on by none.
VALIDATION_OOD = MappingProxyType({name: DataRef(name, "test") for name in ("noise_rademacher", "noise_blobs")})


def _validation(protocol, id_train: DataRef) -> dict:
    """The Task fields for a protocol's validation data: ID training ref without the hold-out, the held-out
    ref, and the validation OOD sets fitted to the ID images' shape."""
    train, val = id_train.split_off(protocol.id_validation)
    ood_vals = {name: _fitted(ref, id_train.image_shape()) for name, ref in protocol.validation_ood.items()}
    return {"id_train": train, "id_val": val, "ood_vals": ood_vals}


def _fitted(ref: DataRef | None, id_shape) -> DataRef | None:
    """`ref` brought to the ID images' shape unless it says how to preprocess itself."""
    return ref if ref is None or ref.preprocess else replace(ref, preprocess=Preprocess.to_shape(id_shape))


@dataclass(frozen=True)
class OpenSetSplit:
    """Known classes of one partition and its unknown ones.

    By default every other class of the same dataset is unknown; `unknown` and
    `unknown_dataset` take them from another dataset instead (CIFAR+10: CIFAR-100 classes).
    """

    name: str
    known: tuple[int, ...]
    unknown: tuple[int, ...] | None = None
    unknown_dataset: str | None = None


@dataclass(frozen=True)
class OpenSetProtocol:
    """Near-OOD on one dataset: known classes are ID, the rest of its test split is OOD.

    `datasets` maps a dataset name to its partitions and the split holding OOD test images.
    """

    name: str
    description: str
    datasets: Mapping[str, Sequence[OpenSetSplit]]
    total_classes: Mapping[str, int]
    test_split: Mapping[str, str] = field(default_factory=dict)
    ood_set_name: str = "unknown_classes"
    aux: DataRef | None = None  # the auxiliary (unlabelled outlier) set of every task, fitted to its ID shape
    id_validation: Holdout | None = ID_VALIDATION
    validation_ood: Mapping[str, DataRef] = field(default_factory=lambda: VALIDATION_OOD)

    def dataset_names(self) -> list[str]:
        return list(self.datasets)

    def partition_names(self, dataset: str) -> list[str]:
        return [split.name for split in self.datasets[dataset]]

    def tasks(self, datasets: Sequence[str] | None = None, partitions: Sequence[str] | None = None) -> list[Task]:
        tasks = []
        for name in _check_choice(self.name, self.datasets, datasets, partitions, self.partition_names):
            test_split = self.test_split.get(name, "test")
            for split in self.datasets[name]:
                if partitions and split.name not in partitions:
                    continue
                unknown = split.unknown or tuple(c for c in range(self.total_classes[name]) if c not in split.known)
                unknown_dataset = split.unknown_dataset or name
                tasks.append(
                    Task(
                        protocol=self.name,
                        dataset=name,
                        partition=split.name,
                        **_validation(self, DataRef(name, "train", split.known)),
                        id_test=DataRef(name, test_split, split.known),
                        ood_tests={self.ood_set_name: DataRef(unknown_dataset, self.test_split.get(unknown_dataset, "test"),
                                                              unknown)},
                        num_classes=len(split.known),
                        extra_train=_fitted(self.aux, DATASETS.get(name).image_shape),
                    )
                )
        return tasks


@dataclass(frozen=True)
class FarOODSetup:
    """The ID data of one far-OOD task and the named OOD sets it is tested against.

    An OOD ref without a preprocess is fitted to the ID images' shape (resize, centre crop,
    channel conversion), so any set can face any ID dataset.
    """

    id_train: DataRef
    id_test: DataRef
    ood_tests: Mapping[str, DataRef]
    extra_train: DataRef | None = None


@dataclass(frozen=True)
class FarOODProtocol:
    """ID datasets against whole other datasets: one task per ID dataset, all its classes known."""

    name: str
    description: str
    datasets: Mapping[str, FarOODSetup]
    partition: str = "all"
    id_validation: Holdout | None = ID_VALIDATION
    validation_ood: Mapping[str, DataRef] = field(default_factory=lambda: VALIDATION_OOD)

    def dataset_names(self) -> list[str]:
        return list(self.datasets)

    def partition_names(self, dataset: str) -> list[str]:
        return [self.partition]

    def tasks(self, datasets: Sequence[str] | None = None, partitions: Sequence[str] | None = None) -> list[Task]:
        tasks = []
        for name in _check_choice(self.name, self.datasets, datasets, partitions, self.partition_names):
            setup = self.datasets[name]
            id_shape = setup.id_train.image_shape()
            classes = setup.id_train.classes
            tasks.append(Task(
                protocol=self.name,
                dataset=name,
                partition=self.partition,
                **_validation(self, setup.id_train),
                id_test=setup.id_test,
                ood_tests={ood: _fitted(ref, id_shape) for ood, ref in setup.ood_tests.items()},
                num_classes=len(classes) if classes else DATASETS.get(setup.id_train.dataset).num_classes,
                extra_train=_fitted(setup.extra_train, id_shape),
            ))
        return tasks


PROTOCOLS: Registry = Registry("protocol", discover="protocols")


def register_protocol(protocol):
    return PROTOCOLS.register(protocol.name, protocol)


def consecutive_partitions(width: int, starts: Sequence[int]) -> list[OpenSetSplit]:
    """Partitions named 'a-b' holding `width` consecutive classes from each start."""
    return [OpenSetSplit(f"{s}-{s + width - 1}", tuple(range(s, s + width))) for s in starts]
