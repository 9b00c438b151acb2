"""Protocols as data: each one expands into tasks (ID train, ID test, named OOD test sets).

A protocol module in `protocols/` registers a `Protocol`. The runner only ever sees
`Task`s, so a new protocol never needs a change to the runner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from bench.errors import BenchError
from bench.registry import Registry


@dataclass(frozen=True)
class DataRef:
    """A view of one split of a registered dataset, optionally restricted to some classes.

    With `classes`, only those classes are kept and relabelled 0..len-1 in the given order.
    """

    dataset: str
    split: str
    classes: tuple[int, ...] | None = None

    def describe(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "classes": list(self.classes) if self.classes else None}


@dataclass(frozen=True)
class Task:
    """One evaluation unit: a model is trained on `id_train` and tested on the rest."""

    protocol: str
    dataset: str
    partition: str
    id_train: DataRef
    id_test: DataRef
    ood_tests: Mapping[str, DataRef]
    num_classes: int

    @property
    def name(self) -> str:
        return f"{self.protocol}/{self.dataset}/{self.partition}"

    def data_refs(self) -> list[DataRef]:
        return [self.id_train, self.id_test, *self.ood_tests.values()]


@dataclass(frozen=True)
class OpenSetSplit:
    """Known classes of one partition; every other class of the same dataset is OOD."""

    name: str
    known: tuple[int, ...]


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
        chosen = list(datasets) if datasets else self.dataset_names()
        for name in chosen:
            if name not in self.datasets:
                raise BenchError(
                    f"protocol {self.name!r} has no dataset {name!r}; it has {', '.join(self.dataset_names())}"
                )
        tasks = []
        for name in chosen:
            known_partitions = self.partition_names(name)
            for wanted in partitions or []:
                if wanted not in known_partitions:
                    raise BenchError(
                        f"dataset {name!r} in protocol {self.name!r} has no partition {wanted!r}; "
                        f"partitions are {', '.join(known_partitions)}"
                    )
            test_split = self.test_split.get(name, "test")
            for split in self.datasets[name]:
                if partitions and split.name not in partitions:
                    continue
                unknown = tuple(c for c in range(self.total_classes[name]) if c not in split.known)
                tasks.append(
                    Task(
                        protocol=self.name,
                        dataset=name,
                        partition=split.name,
                        id_train=DataRef(name, "train", split.known),
                        id_test=DataRef(name, test_split, split.known),
                        ood_tests={self.ood_set_name: DataRef(name, test_split, unknown)},
                        num_classes=len(split.known),
                    )
                )
        return tasks


PROTOCOLS: Registry = Registry("protocol", discover="protocols")


def register_protocol(protocol):
    return PROTOCOLS.register(protocol.name, protocol)


def consecutive_partitions(width: int, starts: Sequence[int]) -> list[OpenSetSplit]:
    """Partitions named 'a-b' holding `width` consecutive classes from each start."""
    return [OpenSetSplit(f"{s}-{s + width - 1}", tuple(range(s, s + width))) for s in starts]
