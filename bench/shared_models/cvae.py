"""The class-conditional VAE that CMG decodes pseudo-OOD images from, trained on ID data."""
from bench.nets.cvae import CVAE
from bench.recipes import RecipeTable, Stage
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, to_float

# paper: the CMG code trains the CVAE with the classifier's schedule (SPEC.md §3).
RECIPES = RecipeTable("cvae", {
    ("gray28", "smoke"): Stage("conv", 8, 2, 64, 1e-3),
    ("gray28", "demo"): Stage("conv", 16, 2, 128, 1e-3),
    ("gray28", "paper"): Stage("conv", None, 100, 512, 1e-3),
    ("colour", "smoke"): Stage("conv", 8, 2, 64, 1e-3),
    ("colour", "demo"): Stage("conv", 32, 10, 128, 1e-3),
    ("colour", "paper"): Stage("resnet", None, 200, 512, 1e-3),
})


def build(task, recipe):
    channels, size, _ = task.image_shape
    part = recipe.pick(RECIPES)
    return CVAE(channels, size, task.num_classes, arch=part.arch, width=part.width)


def train(model, inputs: TrainInputs):
    return inputs.fit(model, inputs.recipe.pick(RECIPES), lambda net, x, y: net.loss(x, y), to_float, "cvae")


register_shared_model(SharedModel(
    kind="cvae",
    description="conditional VAE (class embedding, z dim 32), MSE + KL/(CHW) on ID training data",
    build=build,
    train=train,
    recipe_part=lambda recipe: recipe.pick(RECIPES),
))
