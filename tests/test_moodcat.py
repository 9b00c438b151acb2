"""MOODCAT: networks, masking, pair labels, the cascade, and an honest test path."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from bench.data import ImageSet
from bench.errors import BenchError
from bench.method import MethodSpec, parse_methods
from bench.nets.moodcat import (PairClassifier, Synthesizer, UNetDiscriminator, apply_masks, mask_ratios,
                                random_masks)
from bench.shared_models import moodcat as shared
from methods.moodcat import calibrated, cascade, load_iqa


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (3, 64)])
def test_shapes_follow_the_images(channels, size):
    generator = Synthesizer(channels, size, num_classes=6, width=4)
    disc = UNetDiscriminator(channels, num_classes=6, width=4)
    pair = PairClassifier(channels, num_classes=6, width=8)
    images = torch.rand(3, channels, size, size) * 2 - 1
    labels = torch.tensor([0, 3, 5])
    synthesis, mu, logvar = generator(images, labels)
    assert synthesis.shape == images.shape and mu.shape == logvar.shape == (3, 128)
    assert synthesis.abs().max() <= 1
    image_logit, pixel_logit = disc(synthesis, labels)
    assert image_logit.shape == (3,) and pixel_logit.shape == (3, 1, size, size)
    assert pair(images, synthesis, labels).shape == (3,)


def test_paper_widths_match_the_released_code():
    """Decoder: Linear(128 -> 512*4*4), blocks 512 -> 256 -> 128 -> 32 at width 32 on 32x32."""
    decoder = Synthesizer(3, 32, 10, width=32).decoder
    assert decoder.linear.weight_orig.shape == (512 * 4 * 4, 128)
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in decoder.blocks] == [(512, 256), (256, 128),
                                                                                    (128, 32)]


@pytest.mark.parametrize("training, expected", [(True, (0.10, 0.33)), (False, (0.15, 0.33))])
@pytest.mark.parametrize("size", [28, 32])
def test_random_mask_ratio_stays_in_range(training, expected, size):
    ratios = mask_ratios("random", training)
    assert ratios == expected
    masks = random_masks(5000, size, size, ratios, torch.Generator().manual_seed(0))
    covered = masks.float().mean(dim=(1, 2, 3))
    assert covered.min() >= expected[0] and covered.max() <= expected[1]
    rows, cols = masks.any(dim=3).sum(dim=(1, 2)), masks.any(dim=2).sum(dim=(1, 2))
    assert torch.equal(rows * cols, masks.sum(dim=(1, 2, 3)))  # one rectangle per image


def test_masks_fill_with_zero_and_none_leaves_images_alone():
    images = torch.ones(4, 1, 28, 28)
    masked = apply_masks(images, "random", training=False, generator=torch.Generator().manual_seed(1))
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    assert apply_masks(images, "none", training=False, generator=torch.Generator()) is images
    with pytest.raises(BenchError, match="unknown MOODCAT mask"):
        mask_ratios("patched", True)


def test_generator_conditions_on_the_label():
    torch.manual_seed(0)
    generator = Synthesizer(1, 28, 6, width=4).eval()
    z = torch.randn(2, 128)
    with torch.no_grad():
        first = generator.decoder(z, generator.condition(torch.tensor([0, 0])))
        second = generator.decoder(z, generator.condition(torch.tensor([1, 1])))
    assert (first - second).abs().max() > 1e-3
    unconditional = Synthesizer(1, 28, 6, width=4, conditional=False).eval()
    with torch.no_grad():
        same = [unconditional(torch.zeros(2, 1, 28, 28), torch.tensor([c, c]), sample=False)[0] for c in (0, 1)]
    assert torch.equal(*same)


class _LabelPainter(torch.nn.Module):
    """A stand-in generator whose synthesis is the label it was given, painted on every pixel."""

    def forward(self, masked, labels, sample=True):
        return labels.float().view(-1, 1, 1, 1).expand_as(masked).clone(), None, None


def test_pair_classifier_sees_true_labels_as_positive_and_wrong_labels_as_negative():
    labels = torch.arange(6).repeat(20)
    images = torch.zeros(len(labels), 1, 28, 28)
    pairs, syntheses, conditions, targets = shared.pair_batch(
        _LabelPainter(), images, labels, None, None, "random", 6, torch.Generator().manual_seed(0))
    painted = syntheses[:, 0, 0, 0].long()
    assert torch.equal(painted, conditions)  # each synthesis used the label C_b is conditioned on
    positive, negative = targets > 0, targets < 0
    assert positive.sum() == negative.sum() == len(labels)
    assert torch.equal(conditions[positive], labels)
    assert (conditions[negative] != labels).all()
    assert len(set(conditions[negative].tolist())) == 6  # wrong labels cover every class


def test_external_negatives_avoid_the_classifiers_prediction():
    labels, images = torch.zeros(6, dtype=torch.long), torch.zeros(6, 1, 28, 28)
    external, predictions = torch.zeros(300, 1, 28, 28), torch.arange(300) % 6
    _, _, conditions, targets = shared.pair_batch(
        _LabelPainter(), images, labels, external, predictions, "random", 6, torch.Generator().manual_seed(0))
    assert (targets[-300:] == -1).all()
    assert (conditions[-300:] != predictions).all()


def test_pair_hinge_loss_is_equation_2():
    logits, targets = torch.tensor([2.0, 0.5, -2.0, 0.5]), torch.tensor([1.0, 1.0, -1.0, -1.0])
    assert shared.pair_hinge_loss(logits, targets) == pytest.approx((0 + 0.5) / 2 + (0 + 1.5) / 2)


def test_calibration_is_a_strictly_increasing_percentile():
    reference = torch.linspace(0, 1, 101)
    scores = torch.tensor([-1.0, 0.0, 0.05, 0.5, 1.0, 2.0])
    percentiles = calibrated(scores, reference)
    assert (percentiles.diff() > 0).all()
    assert percentiles[3] == pytest.approx(0.5, abs=0.01)


def test_cascade_rejects_when_any_scorer_rejects():
    reference = {"cb": torch.linspace(0, 1, 101), "lpips": torch.linspace(-10, 0, 101)}
    raw = {"cb": torch.tensor([0.9, 0.9, 0.02]), "lpips": torch.tensor([-1.0, -9.9, -1.0])}
    combined = cascade({name: calibrated(raw[name], reference[name]) for name in raw})
    threshold = 0.05  # reject below the 5th ID percentile
    assert combined[0] > threshold  # both scorers accept
    assert combined[1] < threshold and combined[2] < threshold  # one rejects: the cascade rejects


def test_missing_iqa_weights_are_said_clearly(tmp_path):
    metric, why = load_iqa("lpips", None)
    assert metric is None and "no iqa_weights folder" in why
    metric, why = load_iqa("dists", str(tmp_path))
    assert metric is None and "dists_weights.pt" in why and str(tmp_path) in why


def test_options_choose_the_shared_models():
    def requires(text):
        return parse_methods(text)[0].requires()

    assert requires("moodcat") == ("classifier", "moodcat_generator", "moodcat_cb")
    assert requires("moodcat[conditional=False]") == ("classifier", "moodcat_generator_uncond", "moodcat_cb_uncond")
    assert requires("moodcat[mask=none]")[1:] == ("moodcat_generator_nomask", "moodcat_cb_nomask")
    assert requires("moodcat[mask=fixed]")[1:] == ("moodcat_generator_fixedmask", "moodcat_cb_fixedmask")
    assert requires("moodcat[scorers=lpips]") == ("classifier", "moodcat_generator")
    assert requires("moodcat[external=mnist]")[2] == "moodcat_cb+mnist"
    from bench.shared import SHARED_MODELS

    assert SHARED_MODELS.get("moodcat_cb+mnist").requires == ("moodcat_generator", "classifier")
    with pytest.raises(BenchError, match="no MOODCAT generator"):
        requires("moodcat[mask=none,conditional=False]")
    with pytest.raises(BenchError, match="scorers"):
        requires("moodcat[scorers=ssim]")


def test_external_set_cannot_be_the_id_dataset(smoke_task):
    with pytest.raises(BenchError, match="ID dataset itself"):
        shared.external_negatives("fashion_mnist", smoke_task, 10, None, None)


@pytest.fixture(scope="module")
def fitted(smoke_context):
    spec = MethodSpec("moodcat")
    ctx = smoke_context(spec)
    return spec.build().fit(ctx), ctx


def test_end_to_end_smoke(fitted, smoke_test_images):
    method, ctx = fitted
    id_images, id_labels, ood_images = smoke_test_images
    prediction = method.predict(id_images)
    assert prediction.score.shape == (len(id_images),) and torch.isfinite(prediction.score).all()
    assert torch.equal(prediction.label, ctx.models["classifier"](id_images).argmax(1))
    assert torch.equal(method.predict(id_images).score, prediction.score)  # same images, same masks, same score
    reference = method.reference_["cb"]
    assert torch.equal(reference, method.reference_["cb"]) and len(reference) == len(ctx.validation)  # the ID validation split


def test_test_path_never_reads_ground_truth_labels(fitted, smoke_task, monkeypatch, tmp_path):
    """Every test label wrong: the OOD metrics are identical, only closed-set accuracy changes."""
    from bench import runner, scoring

    method, ctx = fitted
    settings = runner.Settings(out=str(tmp_path))
    honest = scoring.score_task(method, smoke_task, settings, 200, 0)
    original = scoring.load_ref

    def wrong_labels(ref, *args):
        data = original(ref, *args)
        return ImageSet(data.images, (data.labels + 1) % ctx.task.num_classes)

    monkeypatch.setattr(scoring, "load_ref", wrong_labels)
    corrupted = scoring.score_task(method, smoke_task, settings, 200, 0)
    assert {k: v for k, v in corrupted.metrics.items() if k != "accuracy"} == \
        {k: v for k, v in honest.metrics.items() if k != "accuracy"}
    assert corrupted.metrics["accuracy"] < honest.metrics["accuracy"]


def test_iqa_scorer_without_weights_falls_back_to_cb(smoke_context, fitted, caplog):
    spec = MethodSpec("moodcat", (("scorers", "cb+lpips"),))
    with caplog.at_level(logging.WARNING):
        method = spec.build().fit(smoke_context(spec))
    assert list(method.reference_) == ["cb"]
    assert "lpips weights missing" in caplog.text
    lone = MethodSpec("moodcat", (("scorers", "lpips"),))
    with pytest.raises(BenchError, match="no scorer left"):
        lone.build().fit(smoke_context(lone))


def test_recipe_enters_the_cache_keys(smoke_task):
    from bench.runner import task_recipe
    from bench.shared import SHARED_MODELS
    from bench.recipes import parse_overrides

    recipe = task_recipe(smoke_task, "smoke")
    spec, pair = SHARED_MODELS.get("moodcat_generator"), SHARED_MODELS.get("moodcat_cb")
    generator_key, pair_key = spec.key(smoke_task, recipe, 0, {}), pair.key(smoke_task, recipe, 0, {})
    wider = dataclasses.replace(recipe, overrides=parse_overrides(["moodcat.generator.width=8"]))
    assert spec.key(smoke_task, wider, 0, {}) != generator_key
    assert pair.key(smoke_task, recipe, 0, {}) == pair_key  # C_b's key takes the generator's key as a dependency
    recipe = dataclasses.replace(recipe, overrides=parse_overrides(["moodcat.pair_classifier.epochs=2"]))
    assert pair.key(smoke_task, recipe, 0, {}) != pair_key


def test_cli_runs_moodcat_and_an_ablation_charging_their_own_shared_models(tmp_path, capsys):
    import json

    from bench.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    status = main(["run", "--methods", "moodcat,moodcat[conditional=False]", "--protocol", "setting1",
                   "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
                   "--out", str(out), "--cache", str(cache)])
    assert status == 0
    records = {r["method"]: r for r in (json.loads(p.read_text()) for p in (out / "trials").glob("*.json"))}
    assert set(records["moodcat"]["timing"]["shared_models"]) == {"classifier", "moodcat_generator", "moodcat_cb"}
    assert set(records["moodcat[conditional=False]"]["timing"]["shared_models"]) == {
        "classifier", "moodcat_generator_uncond", "moodcat_cb_uncond"}
    assert len(list((cache / "classifier").iterdir())) == 1  # both share the one ID classifier
    assert "moodcat[conditional=False]" in capsys.readouterr().out
