"""CCC: the KL-to-uniform term by hand, the generator's loss, samples, and the method end to end."""
from __future__ import annotations

import math

import pytest
import torch

from bench.cli import main
from bench.data import ImageSet
from bench.method import MethodSpec
from bench.recipes import Override, recipe_for
from bench.shared import SHARED_MODELS
from bench.shared_models import ccc
from bench.training import TrainInputs


def test_kl_to_uniform_on_a_hand_computed_case():
    # Row 1: equal logits, softmax = (1/3, 1/3, 1/3) = U, so KL = 0.
    # Row 2: logits log(1, 2, 3), softmax = (1/6, 2/6, 3/6):
    #   KL(U || p) = 1/3 [log((1/3)/(1/6)) + log((1/3)/(2/6)) + log((1/3)/(3/6))]
    #              = 1/3 [log 2 + 0 + log(2/3)] = 1/3 log(4/3).
    logits = torch.tensor([[5.0, 5.0, 5.0], [0.0, math.log(2), math.log(3)]])
    assert float(ccc.kl_to_uniform(logits[:1])) == pytest.approx(0.0, abs=1e-6)
    assert float(ccc.kl_to_uniform(logits[1:])) == pytest.approx(math.log(4 / 3) / 3, rel=1e-5)
    assert float(ccc.kl_to_uniform(logits)) == pytest.approx(math.log(4 / 3) / 6, rel=1e-5)  # batch mean


def test_generator_loss_adds_beta_times_the_kl_term():
    disc_logits = torch.zeros(2)  # D undecided: softplus(0) = log 2 per sample
    class_logits = torch.tensor([[0.0, math.log(2), math.log(3)]] * 2, requires_grad=True)
    loss = ccc.generator_loss(disc_logits, class_logits, beta=0.5)
    assert float(loss.detach()) == pytest.approx(math.log(2) + 0.5 * math.log(4 / 3) / 3, rel=1e-5)
    # d/dz_j [-mean_c log softmax(z)_c] = p_j - 1/K, times beta, over a batch of 2.
    loss.backward()
    expected = 0.5 * (torch.tensor([1 / 6, 2 / 6, 3 / 6]) - 1 / 3) / 2
    assert torch.allclose(class_logits.grad, expected.expand(2, 3), atol=1e-6)


def _generator_after_one_batch(task, beta: float) -> dict:
    """The generator's weights after one joint step on 8 random images, with the KL weight `beta`."""
    recipe = recipe_for("smoke", task.image_shape, overrides=(Override("ccc", ("beta",), beta),
                                                              Override("ccc", ("epochs",), 1)))
    torch.manual_seed(0)
    model = ccc.build(task, recipe)
    images = torch.randint(0, 256, (8, *task.image_shape), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    train = ImageSet(images, torch.arange(8) % task.num_classes)
    inputs = TrainInputs(task, train, recipe, torch.device("cpu"), torch.Generator().manual_seed(2), {}, 0)
    return {k: v.clone() for k, v in ccc.train(model, inputs).generator.state_dict().items()}


def test_the_generator_step_reads_the_classifier(smoke_task):
    """In the first batch the classifier has not moved yet when G steps, so beta alone changes G's update."""
    without, again, with_kl = (_generator_after_one_batch(smoke_task, beta) for beta in (0.0, 0.0, 1.0))
    assert all(torch.equal(without[k], again[k]) for k in without)  # deterministic given the seeds
    assert any(not torch.equal(without[k], with_kl[k]) for k in without)


def test_samples_are_images_of_the_task_shape_in_the_unit_interval(smoke_context, smoke_task):
    model = smoke_context(MethodSpec("ccc")).models["ccc"]
    assert any(name.startswith("generator.") for name in model.state_dict())  # saved, so samples can be drawn later
    images = SHARED_MODELS.get("ccc").samples(model, smoke_task, 5, torch.Generator().manual_seed(0))
    assert images.shape == (5, *smoke_task.image_shape)
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.std()) > 0


def test_native_score_post_hoc_score_and_cmg_share_one_ccc_network(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "ccc,ccc+cmg_e,energy[net=ccc]", "--protocol", "setting1",
            "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
            "--cpus-per-trial", "1", "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert len(list((cache / "ccc").iterdir())) == 1
    assert not (cache / "classifier").exists()  # nothing here reads the cross-entropy classifier
    assert main(["table", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ccc original" in text and "ccc +cmg_e" in text
    grid = tmp_path / "samples.png"
    assert main(["samples", "--model", "ccc", "--protocol", "setting1", "--dataset", "fashion_mnist", "--partition",
                 "0-5", "--scale", "smoke", "--count", "9", "--cache", str(cache), "--output", str(grid)]) == 0
    from PIL import Image

    with Image.open(grid) as image:  # 3 x 3 images of 28 pixels, 2 pixels of padding around each
        assert image.size == (3 * 30 + 2, 3 * 30 + 2)


def test_samples_of_a_model_not_trained_or_not_generative_are_one_line_errors(tmp_path, one_line_error):
    argv = ["samples", "--protocol", "setting1", "--dataset", "fashion_mnist", "--partition", "0-5", "--scale",
            "smoke", "--cache", str(tmp_path), "--output", str(tmp_path / "grid.png")]
    assert "train it first with `bench run`" in one_line_error([*argv, "--model", "ccc"])
    assert "makes no images to look at" in one_line_error([*argv, "--model", "classifier"])
