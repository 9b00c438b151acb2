"""Setting 1 as data: partitions, class remapping, OOD sets, and a 64x64 run on a fake TinyImageNet."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.method import parse_methods
from bench.protocol import PROTOCOLS
from bench.runner import Settings, run
from bench.store import ResultStore


def test_setting1_partitions_follow_the_paper():
    protocol = PROTOCOLS.get("setting1")
    assert protocol.dataset_names() == ["mnist", "fashion_mnist", "cifar10", "svhn", "tinyimagenet"]
    for name in ("mnist", "fashion_mnist", "cifar10", "svhn"):
        assert protocol.partition_names(name) == ["0-5", "1-6", "2-7", "3-8", "4-9"]
    # The paper's "160-189" has 30 classes; every TinyImageNet partition has 20 (SPEC.md section 2).
    assert protocol.partition_names("tinyimagenet") == ["0-19", "40-59", "80-99", "120-139", "160-179"]
    assert len(protocol.tasks()) == 25


def test_known_classes_are_id_and_the_rest_ood():
    task = PROTOCOLS.get("setting1").tasks(["cifar10"], ["3-8"])[0]
    assert task.id_train.classes == (3, 4, 5, 6, 7, 8) and task.id_train.split == "train"
    assert task.id_test.classes == (3, 4, 5, 6, 7, 8) and task.id_test.split == "test"
    assert task.ood_tests["unknown_classes"].classes == (0, 1, 2, 9)
    assert task.num_classes == 6
    tiny = PROTOCOLS.get("setting1").tasks(["tinyimagenet"], ["160-179"])[0]
    assert tiny.id_test.split == "val" and tiny.ood_tests["unknown_classes"].split == "val"
    assert len(tiny.ood_tests["unknown_classes"].classes) == 180 and tiny.num_classes == 20


def test_known_classes_are_relabelled_in_ascending_order():
    from bench.data import load_split

    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["2-7"])[0]
    full = load_split("fashion_mnist", "test")
    selected = full.select(task.id_test.classes)
    assert len(selected) == 6000 and selected.labels.unique().tolist() == list(range(6))
    first_trouser = int((full.labels == 2).nonzero()[0])
    kept_before = int(((full.labels[:first_trouser] >= 2) & (full.labels[:first_trouser] <= 7)).sum())
    assert int(selected.labels[kept_before]) == 0  # class 2 becomes 0


def test_unknown_partition_and_dataset():
    protocol = PROTOCOLS.get("setting1")
    with pytest.raises(BenchError, match="has no partition '0-9'"):
        protocol.tasks(["mnist"], ["0-9"])
    with pytest.raises(BenchError, match="has no dataset 'lsun'"):
        protocol.tasks(["lsun"])


def _fake_tinyimagenet(root, per_class=3, val_per_class=1):
    base = root / "tiny-imagenet-200"
    wnids = [f"n{index:08d}" for index in range(200)]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # class index = sorted position
    rng = np.random.default_rng(0)
    annotations = []
    for index, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for k in range(per_class):
            pixels = np.clip(colour + rng.integers(-20, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{wnid}_{k}.JPEG")
        for k in range(val_per_class):
            name = f"val_{index}_{k}.JPEG"
            Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(base / "val" / "images" / name)
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")


def test_setting1_runs_on_64x64_colour_data(tmp_path):
    """The colour / 64x64 path end to end, on a fake TinyImageNet folder the test writes."""
    _fake_tinyimagenet(tmp_path / "data")
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), data_root=str(tmp_path / "data"))
    summary = run("setting1", parse_methods("softmax,cmg_e"), datasets=["tinyimagenet"], partitions=["40-59"],
                  scale="smoke", executor="local", settings=settings)
    assert summary["ran"] == 2
    records = ResultStore(settings.out).records()
    assert {r["data"]["id_train"] for r in records} == {54}  # 60, less the 6 of the ID validation split
    assert {r["data"]["unknown_classes"] for r in records} == {180}


# The class splits of SPEC.md section 2, written out again so that a typo in a protocol file shows.
OSR_UNKNOWN = [[3, 6, 7, 8], [1, 2, 4, 6], [2, 3, 4, 9], [0, 1, 2, 6], [4, 5, 6, 9]]
PLUS10_UNKNOWN = [[26, 31, 34, 44, 45, 63, 65, 77, 93, 98], [7, 11, 66, 75, 77, 93, 95, 97, 98, 99],
                  [2, 11, 15, 24, 32, 34, 63, 88, 93, 95], [1, 11, 38, 42, 44, 45, 63, 64, 66, 67],
                  [3, 15, 19, 21, 42, 46, 66, 72, 78, 98]]
CIFAR100_ANIMAL_SUPERCLASSES = {  # fine-label indices of CIFAR-100's ten animal superclasses
    "aquatic mammals": [4, 30, 55, 72, 95], "fish": [1, 32, 67, 73, 91], "insects": [6, 7, 14, 18, 24],
    "large carnivores": [3, 42, 43, 88, 97], "large omnivores and herbivores": [15, 19, 21, 31, 38],
    "medium mammals": [34, 63, 64, 66, 75], "non-insect invertebrates": [26, 45, 77, 79, 99],
    "people": [2, 11, 35, 46, 98], "reptiles": [27, 29, 44, 78, 93], "small mammals": [36, 50, 65, 74, 80],
}


def test_osr_cifar6_splits_are_the_literatures():
    tasks = PROTOCOLS.get("osr_cifar6").tasks()
    assert [t.partition for t in tasks] == [f"split{i}" for i in range(5)]
    for task, unknown in zip(tasks, OSR_UNKNOWN):
        assert list(task.ood_tests["unknown_classes"].classes) == unknown
        assert list(task.id_train.classes) == [c for c in range(10) if c not in unknown] and task.num_classes == 6


def test_cifar_plus_splits():
    plus10 = PROTOCOLS.get("cifar_plus10").tasks()
    assert len(plus10) == 5
    for task, unknown in zip(plus10, PLUS10_UNKNOWN):
        assert (task.id_train.dataset, task.id_train.classes, task.num_classes) == ("cifar10", (0, 1, 8, 9), 4)
        ood = task.ood_tests["unknown_classes"]
        assert (ood.dataset, ood.split, list(ood.classes)) == ("cifar100", "test", unknown)
    (plus50,) = PROTOCOLS.get("cifar_plus50").tasks()
    animals = sorted(c for classes in CIFAR100_ANIMAL_SUPERCLASSES.values() for c in classes)
    assert sorted(plus50.ood_tests["unknown_classes"].classes) == animals and len(animals) == 50
    assert plus50.ood_tests["unknown_classes"].dataset == "cifar100" and plus50.id_train.classes == (0, 1, 8, 9)
    assert all(set(unknown) <= set(animals) for unknown in PLUS10_UNKNOWN)  # both draw from the same 50 animals
    import protocols.cifar_plus

    assert "Neal" in protocols.cifar_plus.__doc__ and "CAC" in protocols.cifar_plus.__doc__  # its source is named


def test_far_ood_protocols_name_the_papers_sets():
    setting2 = {t.dataset: t for t in PROTOCOLS.get("setting2").tasks()}
    common = ["svhn", "lsun_resize", "lsun_fix", "tinyimagenet_resize", "imagenet_fix"]
    assert list(setting2["cifar10"].ood_tests) == [*common, "cifar100"]
    assert list(setting2["cifar100"].ood_tests) == [*common, "cifar10"]
    fix = setting2["cifar10"].ood_tests["lsun_fix"].preprocess
    assert (fix.resize, fix.crop, fix.size) == (256, 256, 32)
    assert setting2["cifar100"].num_classes == 100 and setting2["cifar10"].id_train.classes is None
    for name in ("scood", "scood_label"):
        tasks = {t.dataset: t for t in PROTOCOLS.get(name).tasks()}
        assert sorted(tasks["cifar10"].ood_tests) == sorted(["svhn", "cifar100", "tin", "texture", "lsun", "places365"])
        assert tasks["cifar10"].extra_train.split == "train_tin"
        assert all(ref.labelled_is_id == (name == "scood") for ref in tasks["cifar10"].ood_tests.values())
    (far,) = PROTOCOLS.get("far_fmnist").tasks()
    assert far.num_classes == 10 and far.image_shape == (1, 28, 28)
    assert {ref.preprocess.shape for ref in far.ood_tests.values()} == {(1, 28, 28)}


def test_setting1_trial_data_is_described_with_its_validation_split():
    """Options a ref does not use stay out of describe(); the hold-out side is in it, so it enters every key."""
    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["0-5"])[0]
    known, holdout = [0, 1, 2, 3, 4, 5], {"fraction": 0.1, "seed": 0}
    grey28 = {"size": 28, "channels": 1, "resize": None, "crop": None}
    assert [ref.describe() for ref in task.data_refs()] == [
        {"dataset": "fashion_mnist", "split": "train", "classes": known, "holdout": {**holdout, "held": False}},
        {"dataset": "fashion_mnist", "split": "test", "classes": known},
        {"dataset": "fashion_mnist", "split": "test", "classes": [6, 7, 8, 9]},
        {"dataset": "natural_patches", "split": "train", "classes": None, "preprocess": grey28},  # auxiliary outliers
        {"dataset": "fashion_mnist", "split": "train", "classes": known, "holdout": {**holdout, "held": True}},
        {"dataset": "noise_rademacher", "split": "test", "classes": None, "preprocess": grey28},
        {"dataset": "noise_blobs", "split": "test", "classes": None, "preprocess": grey28},
    ]


def test_the_id_validation_split_is_a_seeded_tenth_held_out_of_training():
    from bench.scoring import load_ref

    task = PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["1-6"])[0]
    settings = Settings(out="unused").resolved()
    train, val = load_ref(task.id_train, settings, None, 0), load_ref(task.id_val, settings, None, 0)
    assert (len(train), len(val)) == (32400, 3600)  # 6 classes x 6,000 training images
    assert set(val.labels.tolist()) == set(range(6))
    pixels = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in pixels for image in val.images[:500])  # no duplicate images in FMNIST train
    again = load_ref(PROTOCOLS.get("setting1").tasks(["fashion_mnist"], ["1-6"])[0].id_val, settings, None, 0)
    assert torch.equal(again.images, val.images)


def test_validation_ood_sets_are_never_test_sets():
    for name, protocol in PROTOCOLS.items():
        for task in protocol.tasks():
            tested = {(ref.dataset, ref.split) for ref in task.ood_tests.values()}
            assert task.ood_vals and not tested & {(ref.dataset, ref.split) for ref in task.ood_vals.values()}, name
            assert task.id_val is not None and task.id_val.holdout.held and not task.id_train.holdout.held
    task = PROTOCOLS.get("far_fmnist").tasks()[0]
    with pytest.raises(BenchError, match="noise_gaussian is also a test OOD set"):
        dataclasses.replace(task, ood_vals={"noise_gaussian": task.ood_tests["noise_gaussian"]})


def test_every_task_is_named_after_a_dataset_of_its_id_shape():
    """Shared models size their networks from `task.dataset`; it must have the ID images' shape."""
    from bench.data import DATASETS

    for name, protocol in PROTOCOLS.items():
        for task in protocol.tasks():
            assert DATASETS.get(task.dataset).image_shape == task.image_shape, task.name
            assert len({task.name for task in protocol.tasks()}) == len(protocol.tasks()), name
