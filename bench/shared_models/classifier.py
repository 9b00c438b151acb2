"""The ID classifier: backbone + 2-layer MLP head trained with cross-entropy on ID data.

Every post-hoc method scores it by default, and CMG fine-tunes its head, so it is trained
once per (task data, recipe, seed) and shared.
"""
import torch.nn.functional as F

from bench.augment import training_input
from bench.nets.backbones import Classifier, build_backbone
from bench.recipes import RecipeTable, Stage
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs

# Keyed by (image family, scale). paper: the CMG code's backbones and schedules (SPEC.md §3);
# the released code trains the MNIST classifier for 100 epochs and the CIFAR one for 200.
RECIPES = RecipeTable("classifier", {
    ("gray28", "smoke"): Stage("cnn4", 8, 4, 64, 2e-3),
    ("gray28", "demo"): Stage("cnn4", 16, 3, 128, 1e-3),
    ("gray28", "paper"): Stage("cnn9", None, 100, 512, 1e-3),
    ("colour", "smoke"): Stage("cnn4", 8, 4, 64, 2e-3),
    ("colour", "demo"): Stage("cnn4", 32, 10, 128, 1e-3),
    ("colour", "paper"): Stage("resnet18", None, 200, 512, 1e-3),
})


def stage(recipe) -> Stage:
    """The classifier's stage for this recipe; crop+flip where the dataset asks for it (CIFAR)."""
    return recipe.pick(RECIPES, augment=recipe.augment)


def build(task, recipe):
    channels, size, _ = task.image_shape
    part = stage(recipe)
    return Classifier(build_backbone(part.arch, channels, size, part.width), task.num_classes)


def train(model, inputs: TrainInputs):
    part = stage(inputs.recipe)
    return inputs.fit(model, part, lambda net, x, y: F.cross_entropy(net(x), y), training_input(part.augment),
                      "classifier")


register_shared_model(SharedModel(
    kind="classifier",
    description="ID classifier (backbone + MLP head), cross-entropy on ID training data",
    build=build,
    train=train,
    recipe_part=stage,
    network=True,
))
