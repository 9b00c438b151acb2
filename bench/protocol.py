"""Protocols as data: each one expands into tasks (ID train, ID test, named OOD test sets).

A protocol module in `protocols/` registers a protocol object. The runner only ever sees
`Task`s, so a new protocol never needs a change to the runner. Two kinds exist:
`OpenSetProtocol` (known vs unknown classes, possibly from a second dataset) and
`FarOODProtocol` (an ID dataset against whole other datasets).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from bench.data import DATASETS
from bench.errors import BenchError
from bench.preprocess import Preprocess
from bench.registry import Registry


@dataclass(frozen=True)
class DataRef:
    """A view of one split of a registered dataset, as a task uses it.

    With `classes`, only those classes are kept and relabelled 0..len-1 in the given order.
    With `preprocess`, images are brought to its shape (bench.preprocess). With
    `labelled_is_id` (an OOD set only), images that carry an ID class (label >= 0, SC-OOD's
    `sc_label`) count as ID in that set's metrics; otherwise every image of an OOD set is OOD.
    """

    dataset: str
    split: str
    classes: tuple[int, ...] | None = None
    preprocess: Preprocess | None = None
    labelled_is_id: bool = False

    def describe(self) -> dict:
        """What cache keys and trial ids are built from; options appear only when set, so old ids hold."""
        described = {"dataset": self.dataset, "split": self.split,
                     "classes": list(self.classes) if self.classes else None}
        if self.preprocess:
            described["preprocess"] = self.preprocess.describe()
        if self.labelled_is_id:
            described["labelled_is_id"] = True
        return described

    def image_shape(self) -> tuple[int, int, int] | None:
        return self.preprocess.shape if self.preprocess else DATASETS.get(self.dataset).image_shape

    def ood_mask(self, labels: np.ndarray) -> np.ndarray:
        """Which images of this OOD set are OOD; the others join the ID test images for its metrics."""
        return labels < 0 if self.labelled_is_id else np.ones(len(labels), dtype=bool)


@dataclass(frozen=True)
class Task:
    """One evaluation unit: a model is trained on `id_train` and tested on the rest.

    `extra_train` is unlabelled training data (labels -1) for methods that learn from
    outliers; `skipped_ood_sets` names the OOD sets left out because their data was missing.
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

    @property
    def name(self) -> str:
        return f"{self.protocol}/{self.dataset}/{self.partition}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.id_train.image_shape()

    def required_refs(self) -> list[DataRef]:
        """The data a task cannot run without (an OOD set can be skipped instead)."""
        return [self.id_train, self.id_test, *([self.extra_train] if self.extra_train else [])]

    def data_refs(self) -> list[DataRef]:
        return [self.id_train, self.id_test, *self.ood_tests.values(), *([self.extra_train] if self.extra_train else [])]

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
                        id_train=DataRef(name, "train", split.known),
                        id_test=DataRef(name, test_split, split.known),
                        ood_tests={self.ood_set_name: DataRef(unknown_dataset, self.test_split.get(unknown_dataset, "test"),
                                                              unknown)},
                        num_classes=len(split.known),
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

    def dataset_names(self) -> list[str]:
        return list(self.datasets)

    def partition_names(self, dataset: str) -> list[str]:
        return [self.partition]

    def tasks(self, datasets: Sequence[str] | None = None, partitions: Sequence[str] | None = None) -> list[Task]:
        tasks = []
        for name in _check_choice(self.name, self.datasets, datasets, partitions, self.partition_names):
            setup = self.datasets[name]
            to_id_shape = Preprocess.to_shape(setup.id_train.image_shape())
            classes = setup.id_train.classes
            tasks.append(Task(
                protocol=self.name,
                dataset=name,
                partition=self.partition,
                id_train=setup.id_train,
                id_test=setup.id_test,
                ood_tests={ood: ref if ref.preprocess else replace(ref, preprocess=to_id_shape)
                           for ood, ref in setup.ood_tests.items()},
                num_classes=len(classes) if classes else DATASETS.get(setup.id_train.dataset).num_classes,
                extra_train=setup.extra_train,
            ))
        return tasks


PROTOCOLS: Registry = Registry("protocol", discover="protocols")


def register_protocol(protocol):
    return PROTOCOLS.register(protocol.name, protocol)


def consecutive_partitions(width: int, starts: Sequence[int]) -> list[OpenSetSplit]:
    """Partitions named 'a-b' holding `width` consecutive classes from each start."""
    return [OpenSetSplit(f"{s}-{s + width - 1}", tuple(range(s, s + width))) for s in starts]
