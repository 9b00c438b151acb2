"""The ID classifier: backbone + 2-layer MLP head trained with cross-entropy on ID data.

Every post-hoc method scores it, and CMG fine-tunes its head, so it is trained once per
(task data, recipe, seed) and shared.
"""
import torch.nn.functional as F

from bench.augment import random_crop_flip
from bench.method import to_float
from bench.nets import Classifier, build_backbone
from bench.shared import SharedModel, TrainInputs, register_shared_model


def build(task, recipe):
    channels, size, _ = task.image_shape
    backbone = build_backbone(recipe.classifier.arch, channels, size, recipe.classifier.width)
    return Classifier(backbone, task.num_classes)


def train(model, inputs: TrainInputs):
    stage = inputs.recipe.classifier

    def transform(batch):
        images = to_float(batch)
        return random_crop_flip(images, padding=4) if stage.augment else images

    return inputs.fit(model, stage, lambda net, x, y: F.cross_entropy(net(x), y), transform, "classifier")


register_shared_model(SharedModel(
    kind="classifier",
    description="ID classifier (backbone + MLP head), cross-entropy on ID training data",
    build=build,
    train=train,
    recipe_part=lambda recipe: recipe.classifier,
    code=("bench.nets", "bench.augment", "bench.training", "bench.method", "bench.shared"),
))
