"""Recipes: the paper scale builds the paper's networks; smaller scales stay small."""
from __future__ import annotations

import pytest
import torch

from bench.errors import BenchError
from bench.protocol import PROTOCOLS
from bench.recipes import SCALES, recipe_for
from bench.runner import task_recipe
from bench.shared import SHARED_MODELS
from bench.shared_models import classifier, cvae, moodcat
from methods import cmg


@pytest.mark.parametrize("dataset, backbone, cvae_arch, epochs, augment", [
    ("fashion_mnist", "cnn9", "conv", 100, False),
    ("svhn", "resnet18", "resnet", 200, False),
    ("cifar10", "resnet18", "resnet", 200, True),
    ("tinyimagenet", "resnet18", "resnet", 200, True),
])
def test_paper_scale_uses_the_papers_networks(dataset, backbone, cvae_arch, epochs, augment):
    task = PROTOCOLS.get("setting1").tasks([dataset])[0]
    recipe = task_recipe(task, "paper")
    stage, cvae_stage = classifier.stage(recipe), recipe.pick(cvae.RECIPES)
    assert (stage.arch, cvae_stage.arch) == (backbone, cvae_arch)
    assert (stage.epochs, stage.batch_size, stage.lr) == (epochs, 512, 1e-3)
    assert stage.augment is augment
    assert recipe.pick(cmg.RECIPES) == cmg.FineTune(epochs=10, lr=1e-4, batch_size=128)
    from bench.data import DATASETS

    shape = DATASETS.get(dataset).image_shape
    images = torch.rand(2, *shape)
    labels = torch.tensor([0, 1])
    network = SHARED_MODELS.get("classifier").build(task, recipe).eval()
    assert network(images).shape == (2, task.num_classes)
    generator = SHARED_MODELS.get("cvae").build(task, recipe).eval()
    with torch.no_grad():
        assert generator(images, labels)[0].shape == images.shape


def test_smoke_is_a_subset_and_small_uses_all_data():
    assert recipe_for("smoke", (1, 28, 28)).train_limit == 2000
    assert recipe_for("demo", (1, 28, 28)).train_limit is None


def test_unknown_scale():
    with pytest.raises(BenchError, match="unknown scale 'medium'"):
        recipe_for("medium", (1, 28, 28))


def test_moodcat_recipes_follow_the_released_code_at_paper_scale():
    paper = recipe_for("paper", (3, 32, 32)).pick(moodcat.RECIPES)
    assert (paper.generator.width, paper.generator.disc_width, paper.pair_classifier.width) == (32, 32, 64)
    assert (paper.generator.batch_size, paper.generator.g_lr, paper.generator.d_lr) == (96, 5e-5, 2e-4)
    assert paper.generator.cutmix_rampup == 200
    for scale in ("smoke", "demo"):
        recipe = recipe_for(scale, (1, 28, 28)).pick(moodcat.RECIPES)
        assert recipe.generator.width < paper.generator.width


def test_every_procedure_has_a_recipe_for_every_scale_and_image_family():
    """A procedure's table is complete: no scale fails for lack of an entry, at any image shape."""
    for kind, model in SHARED_MODELS.items():
        for scale in SCALES:
            for shape in ((1, 28, 28), (3, 32, 32)):
                assert model.recipe_part(recipe_for(scale, shape)) is not None, (kind, scale, shape)


def test_there_is_no_reference_scale_until_the_convergence_study_finds_one():
    with pytest.raises(BenchError, match="no CPU reference recipe is chosen yet"):
        recipe_for("reference", (1, 28, 28))
