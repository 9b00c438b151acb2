"""The class-conditional VAE that CMG decodes pseudo-OOD images from, trained on ID data."""
from bench.cvae import CVAE
from bench.method import to_float
from bench.shared import SharedModel, TrainInputs, register_shared_model


def build(task, recipe):
    channels, size, _ = task.image_shape
    return CVAE(channels, size, task.num_classes, arch=recipe.cvae.arch, width=recipe.cvae.width)


def train(model, inputs: TrainInputs):
    return inputs.fit(model, inputs.recipe.cvae, lambda net, x, y: net.loss(x, y), to_float, "cvae")


register_shared_model(SharedModel(
    kind="cvae",
    description="conditional VAE (class embedding, z dim 32), MSE + KL/(CHW) on ID training data",
    build=build,
    train=train,
    recipe_part=lambda recipe: recipe.cvae,
    code=("bench.cvae", "bench.training", "bench.method", "bench.shared"),
))
