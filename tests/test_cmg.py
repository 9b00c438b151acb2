"""CMG specifics: pseudo-OOD quality, what stage 2 changes and what it must leave alone."""
from __future__ import annotations

import copy

import pytest
import torch

from bench.method import MethodSpec
from methods.cmg import CMG, EnergyObjective, generate_pseudo_ood
from methods.energy import negative_energy


def _msp(classifier, images):
    with torch.no_grad():
        return classifier(images).softmax(1).max(1).values


def test_pseudo_ood_is_less_confident_than_id_training_data(smoke_context):
    ctx = smoke_context()
    pseudo = generate_pseudo_ood(ctx.models["cvae"], 600, sigma=5.0, generator=torch.Generator().manual_seed(1),
                                 device=ctx.device)
    assert pseudo.shape == (600, 1, 28, 28)
    assert 0.0 <= float(pseudo.min()) and float(pseudo.max()) <= 1.0
    classifier = ctx.models["classifier"]
    assert _msp(classifier, pseudo).mean() < _msp(classifier, ctx.train_images()[:600]).mean()


def test_pseudo_ood_mixes_two_different_classes(smoke_context, monkeypatch):
    """Every mixed condition combines the embeddings of two distinct known classes."""
    cvae = smoke_context().models["cvae"]
    seen = []
    original = cvae.embed

    def spy(onehot):
        seen.append(onehot.argmax(1))
        return original(onehot)

    monkeypatch.setattr(cvae, "embed", spy)
    generate_pseudo_ood(cvae, 200, 5.0, torch.Generator().manual_seed(0), "cpu")
    first, second = seen
    assert (first != second).all()
    assert set(first.tolist()) == set(range(cvae.num_classes))


def test_z_filter_keeps_latents_away_from_zero(smoke_context, monkeypatch):
    cvae = smoke_context().models["cvae"]
    latents = []
    original = cvae.decode
    monkeypatch.setattr(cvae, "decode", lambda z, emb: latents.append(z) or original(z, emb))
    generate_pseudo_ood(cvae, 100, 1.0, torch.Generator().manual_seed(0), "cpu", z_filter=0.5)
    assert latents[0].abs().min() > 0.5


def _energy_gap(network_logits, id_images, pseudo):
    with torch.no_grad():
        return float(negative_energy(network_logits(id_images)).mean() - negative_energy(network_logits(pseudo)).mean())


def test_stage2_widens_energy_gap_and_leaves_the_feature_extractor_alone(smoke_context):
    ctx = smoke_context()
    classifier = ctx.models["classifier"]
    before = copy.deepcopy(classifier.state_dict())
    method = MethodSpec("cmg_e", (("epochs", 3),)).build().fit(ctx)

    pseudo = generate_pseudo_ood(ctx.models["cvae"], 600, 5.0, torch.Generator().manual_seed(7), ctx.device)
    id_images = ctx.train_images()[:600]
    gap_before = _energy_gap(classifier, id_images, pseudo)
    gap_after = _energy_gap(method.network_, id_images, pseudo)
    assert gap_after > gap_before

    backbone = method.network_.features
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[f"backbone.{name}"]), f"stage 2 changed backbone weight {name}"
    for name, tensor in classifier.state_dict().items():  # the shared classifier itself is untouched too
        assert torch.equal(tensor, before[name])


def test_margins_are_the_20th_and_80th_percentiles():
    objective = EnergyObjective(weight=0.1, temperature=1.0, percentiles=(20.0, 80.0))
    id_logits = torch.zeros(101, 3)
    id_logits[:, 0] = torch.arange(101.0)  # 101 distinct energies, about -1 .. -100
    ood_logits = torch.zeros(101, 3)
    ood_logits[:, 0] = torch.arange(101.0) / 4
    objective.calibrate(id_logits, ood_logits)
    energies_in = objective.energy(id_logits)
    energies_out = objective.energy(ood_logits)
    assert (energies_in > objective.margin_in).float().mean() == pytest.approx(0.8, abs=0.01)
    assert (energies_out < objective.margin_out).float().mean() == pytest.approx(0.8, abs=0.01)


def test_cmg_s_adds_one_ood_logit_and_scores_with_it(smoke_context, smoke_test_images):
    ctx = smoke_context()
    method = MethodSpec("cmg_s").build().fit(ctx)
    id_images, _, _ = smoke_test_images
    with torch.no_grad():
        logits = method.network_(id_images[:10])
    assert logits.shape == (10, ctx.task.num_classes + 1)
    assert torch.allclose(method.predict(id_images[:10]).score, -logits.softmax(1)[:, -1])


def test_last_layer_variant_tunes_only_the_final_linear_layer(smoke_context):
    ctx = smoke_context()
    first_layer = copy.deepcopy(ctx.models["classifier"].head[0].state_dict())
    method = MethodSpec("cmg_e", (("tune", "last"),)).build().fit(ctx)
    tuned = method.network_.features.network  # the frozen copy of the classifier under the tuned layer
    assert torch.equal(tuned.head[0].weight, first_layer["weight"])
    assert not torch.equal(method.network_.final_layer.weight, ctx.models["classifier"].head[-1].weight)


def test_unfrozen_ablation_changes_the_feature_extractor(smoke_context):
    ctx = smoke_context()
    method = MethodSpec("cmg_e_unfrozen").build().fit(ctx)
    original = ctx.models["classifier"].backbone.state_dict()
    changed = [name for name, t in method.network_.features.state_dict().items()
               if t.is_floating_point() and not torch.equal(t, original[name])]
    assert changed


def test_no_pseudo_ablation_uses_no_generated_data(smoke_context):
    method = MethodSpec("cmg_e_no_pseudo").build().fit(smoke_context())
    assert method.pseudo_count_ == 0


def test_pseudo_fraction_sets_the_amount_of_generated_data(smoke_context):
    ctx = smoke_context()
    method = MethodSpec("cmg_e", (("epochs", 1), ("pseudo_fraction", 0.1))).build().fit(ctx)
    assert method.pseudo_count_ == round(0.1 * len(ctx.train))


def test_bad_choice_is_a_clear_error(smoke_context):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="training='sideways' is not one of frozen, unfrozen, direct"):
        CMG(training="sideways").fit(smoke_context())
    with pytest.raises(BenchError, match="training='direct' retrains the cross-entropy classifier's layers"):
        CMG(training="direct", tune="last").fit(smoke_context())
