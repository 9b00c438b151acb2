"""Dataset loading: real Fashion-MNIST files, a fake Tiny ImageNet, and the one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import DATASETS, ImageSet, load_split
from bench.datasets.fashion_mnist import DEBIAN_FOLDER
from bench.errors import BenchError

needs_debian_fashion = pytest.mark.skipif(
    not (DEBIAN_FOLDER / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs `apt install dataset-fashion-mnist`",
)


def _check_fashion(split: str, data: ImageSet) -> None:
    expected = {"train": 60000, "test": 10000}[split]
    assert data.images.shape == (expected, 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert data.labels.shape == (expected,)
    assert data.labels.min() == 0 and data.labels.max() == 9
    assert torch.bincount(data.labels).tolist() == [expected // 10] * 10


@needs_debian_fashion
@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist_from_debian(tmp_path, split):
    _check_fashion(split, load_split("fashion_mnist", split, root=tmp_path))


@needs_debian_fashion
def test_fashion_mnist_from_torchvision_layout(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for file in DEBIAN_FOLDER.glob("*-ubyte.gz"):
        (raw / file.name).symlink_to(file)
    from_debian = DATASETS.get("fashion_mnist").load(tmp_path / "elsewhere", "test")
    # Point the fallback elsewhere so only the root's copy can satisfy the load.
    monkeypatch.setattr("bench.datasets.fashion_mnist.DEBIAN_FOLDER", tmp_path / "absent")
    monkeypatch.setenv("BENCH_DOWNLOAD", "0")
    data = DATASETS.get("fashion_mnist").load(tmp_path, "test")
    _check_fashion("test", data)
    assert torch.equal(data.images, from_debian.images) and torch.equal(data.labels, from_debian.labels)


def test_select_remaps_and_subset_is_seeded():
    labels = torch.arange(100) % 10
    data = ImageSet(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), labels)
    picked = data.select([4, 5, 6])
    assert len(picked) == 30
    assert torch.equal(picked.labels, (labels[(labels >= 4) & (labels <= 6)] - 4))
    assert torch.equal(picked.images.flatten() % 10, picked.labels + 4)
    assert torch.equal(data.select([6, 4]).labels.unique(), torch.tensor([0, 1]))
    assert data.select(None) is data

    first, again, other = data.subset(20, seed=1), data.subset(20, seed=1), data.subset(20, seed=2)
    assert len(first) == 20
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert data.subset(None) is data and data.subset(1000) is data


def test_missing_dataset_is_one_line_error_naming_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DOWNLOAD", "0")
    with pytest.raises(BenchError) as caught:
        load_split("cifar10", "train", root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "BENCH_DOWNLOAD" in message


def test_stalled_download_times_out_as_one_line_error(tmp_path, monkeypatch):
    import socket
    import time

    import torchvision.datasets

    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz"
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url)
        monkeypatch.setattr("bench.datasets._common.DOWNLOAD_TIMEOUT_S", 0.5)
        monkeypatch.setenv("BENCH_DOWNLOAD", "1")
        started = time.monotonic()
        with pytest.raises(BenchError) as caught:
            load_split("cifar10", "test", root=tmp_path)
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert "\n" not in str(caught.value) and "download failed" in str(caught.value)
    assert socket.getdefaulttimeout() is None


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(BenchError, match="(?i)did you mean.*fashion_mnist"):
        load_split("fashion_mnst", "train")


WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted: class index follows sorted order


def _fake_tinyimagenet(root: Path) -> dict[str, np.ndarray]:
    """A tiny `tiny-imagenet-200` tree whose images encode their wnid as a flat grey level."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    grey = {wnid: 40 + 80 * sorted(WNIDS).index(wnid) for wnid in WNIDS}
    for wnid in WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (64, 64), (grey[wnid],) * 3).save(images / f"{wnid}_{k}.JPEG", quality=95)
    lines = []
    for k, wnid in enumerate(["n03", "n01", "n02", "n01"]):
        mode = "L" if k == 0 else "RGB"  # Tiny ImageNet has a few greyscale JPEGs
        colour = grey[wnid] if mode == "L" else (grey[wnid],) * 3
        Image.new(mode, (64, 64), colour).save(folder / "val" / "images" / f"val_{k}.JPEG", quality=95)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"train": np.repeat([0, 1, 2], 3), "val": np.array([2, 0, 1, 0])}


def _check_tiny(data: ImageSet, labels: np.ndarray) -> None:
    assert data.images.shape == (len(labels), 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == labels.tolist()
    expected_grey = torch.tensor([40, 120, 200])[data.labels].float()
    assert torch.allclose(data.images.float().mean(dim=(1, 2, 3)), expected_grey, atol=3)


@pytest.mark.parametrize("split", ["train", "val"])
def test_tinyimagenet_labels_cache_and_recovery(tmp_path, monkeypatch, split):
    from bench import preprocess

    labels = _fake_tinyimagenet(tmp_path)[split]
    load = DATASETS.get("tinyimagenet").load
    _check_tiny(load(tmp_path, split).prepared(None), labels)
    (cache,) = (tmp_path / "tiny-imagenet-200").glob(f"bench-cache-{split}-*.npz")
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]

    real_decode = preprocess.decode

    def refuse(path, _preprocess):
        raise AssertionError(f"decoded {path} although a valid cache exists")

    monkeypatch.setattr(preprocess, "decode", refuse)
    _check_tiny(load(tmp_path, split).prepared(None), labels)

    cache.write_bytes(b"PK\x03\x04 not really a zip file")
    monkeypatch.setattr(preprocess, "decode", real_decode)
    _check_tiny(load(tmp_path, split).prepared(None), labels)
    with np.load(cache) as rewritten:
        assert rewritten["images"].shape == (len(labels), 3, 64, 64)


def test_tinyimagenet_missing_names_folder(tmp_path):
    with pytest.raises(BenchError) as caught:
        load_split("tinyimagenet", "val", root=tmp_path)
    assert "\n" not in str(caught.value)
    assert str(tmp_path / "tiny-imagenet-200") in str(caught.value)


def test_every_dataset_declares_its_shape():
    for name, source in DATASETS.items():
        assert source.splits and source.how_to_obtain, name
        assert source.image_shape is None or len(source.image_shape) == 3, name
        assert all(isinstance(place, Path) for place in source.locations(Path("/data"))), name
    assert {"fashion_mnist", "mnist", "cifar10", "cifar100", "svhn", "tinyimagenet"} <= set(DATASETS.names())


def test_image_lists_and_folders_fail_in_one_line(tmp_path):
    from PIL import Image

    from bench.datasets._common import image_folder, image_list

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "a.png")
    good = tmp_path / "good.txt"
    good.write_text("a.png {'label': 2, 'sc_label': -1}\na.png 4\n")  # the released code also accepts a bare int
    assert list(image_list(good, images, "label", "demo", "get it").labels) == [2, 4]
    for text, expected in (("a.png {'label': 2}\n", "cannot read a 'sc_label'"),
                           ("b.png {'sc_label': 1}\n", str(images))):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(BenchError, match=expected) as caught:
            image_list(bad, images, "sc_label", "demo", "get it")
        assert "\n" not in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no image files"):
        image_folder(tmp_path / "empty", "demo", "get it", (3, 32, 32))
    with pytest.raises(BenchError, match="vary in size"):
        image_list(good, images, "label", "demo", "get it").prepared(None)
