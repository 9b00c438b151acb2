"""Tests of bench.metrics against hand-worked answers and against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from bench.metrics import accuracy, ood_metrics, reference_metrics as sklearn_metrics

KEYS = ("auroc", "fpr95", "fpr95_oodpos", "aupr_in", "aupr_out")


def assert_metrics(got: dict, expected: dict) -> None:
    assert set(got) == set(KEYS)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_perfect_separation():
    got = ood_metrics(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    assert_metrics(got, {"auroc": 1.0, "fpr95": 0.0, "fpr95_oodpos": 0.0, "aupr_in": 1.0, "aupr_out": 1.0})


def test_inverted_separation():
    # Every OOD outscores every ID: accepting 95% of ID (all 3 of them) accepts all OOD,
    # and flagging all OOD flags all ID. AUPR-In: the ID samples come 4th, 5th and 6th
    # in the ranking, precisions 1/4, 2/5, 3/6, mean 23/60; AUPR-Out the same by symmetry.
    got = ood_metrics(np.array([0.0, 1.0, 2.0]), np.array([3.0, 4.0, 5.0]))
    assert_metrics(got, {"auroc": 0.0, "fpr95": 1.0, "fpr95_oodpos": 1.0, "aupr_in": 23 / 60, "aupr_out": 23 / 60})


def test_all_scores_equal():
    # One threshold accepts everything: precision is the class fraction at full recall.
    got = ood_metrics(np.full(3, 0.7), np.full(1, 0.7))
    assert_metrics(got, {"auroc": 0.5, "fpr95": 1.0, "fpr95_oodpos": 1.0, "aupr_in": 3 / 4, "aupr_out": 1 / 4})


def test_hand_worked_ties():
    # ID [3, 2, 2, 1], OOD [2, 1, 0, 0]. Groups by score, (ID, OOD) counts:
    #   3: (1, 0)   2: (2, 1)   1: (1, 1)   0: (0, 2)
    # AUROC over 16 pairs, a win 1 and a tie 1/2: the ID at 3 beats all 4 OOD (4); each
    #   ID at 2 beats 1, 0, 0 and ties 2 (3.5, twice: 7); the ID at 1 beats 0, 0 and ties
    #   1 (2.5). (4 + 7 + 2.5) / 16 = 27/32.
    # FPR95 (ID positive): cumulative ID from the top 1, 3, 4; 95% of 4 is 3.8, reached
    #   only at threshold 1, which accepts OOD 2 and 1: 2/4.
    # FPR95, OOD positive: cumulative OOD from the bottom 2, 3, 4; 3.8 first reached at
    #   threshold 2, which flags ID 2, 2, 1: 3/4.
    # AUPR-In: recall gained x precision at each threshold:
    #   3: 1/4 x 1/1, 2: 2/4 x 3/4, 1: 1/4 x 4/6  ->  1/4 + 3/8 + 1/6 = 19/24.
    # AUPR-Out, from the bottom: 0: 2/4 x 2/2, 1: 1/4 x 3/4, 2: 1/4 x 4/7
    #   ->  1/2 + 3/16 + 1/7 = 93/112.
    got = ood_metrics(np.array([3.0, 2.0, 2.0, 1.0]), np.array([2.0, 1.0, 0.0, 0.0]))
    assert_metrics(got, {"auroc": 0.84375, "fpr95": 0.5, "fpr95_oodpos": 0.75,
                         "aupr_in": 0.7916666666666666, "aupr_out": 0.8303571428571428})


def test_aupr_in_and_out_not_swapped():
    # ID [2], OOD [3, 1, 0]. AUPR-In: the one ID sample ranks 2nd by score, precision 1/2.
    # AUPR-Out, ranked by -score: OOD 0 and 1 come first (precision 1, 1), then ID 2, then
    # OOD 3 (precision 3/4): (1 + 1 + 3/4) / 3 = 11/12.
    got = ood_metrics(np.array([2.0]), np.array([3.0, 1.0, 0.0]))
    assert_metrics(got, {"aupr_in": 0.5, "aupr_out": 11 / 12})


def test_fpr95_conventions_differ():
    # ID [4, 3, 2, 1], OOD [3.5, 0]. Accepting 95% of ID means all four (threshold 1),
    # which accepts OOD 3.5: fpr95 = 1/2. Flagging 95% of OOD means both (threshold 3.5
    # from below), which flags ID 3, 2, 1: fpr95_oodpos = 3/4.
    got = ood_metrics(np.array([4.0, 3.0, 2.0, 1.0]), np.array([3.5, 0.0]))
    assert_metrics(got, {"fpr95": 0.5, "fpr95_oodpos": 0.75})


def test_fpr95_exactly_95_percent_counts_as_reached():
    # 20 ID at 1..20: threshold 2 accepts 19/20 = exactly 95%, and of the OOD only 10.5.
    # Were "reached" strict, the threshold would drop to 1 and accept 1.5 too.
    got = ood_metrics(np.arange(1.0, 21.0), np.array([1.5, 10.5]))
    assert got["fpr95"] == 0.5


def test_fpr95_keeps_points_roc_curve_drops_by_default():
    # ID and OOD both 0..19, each score tied across the classes: the ROC is the diagonal,
    # so roc_curve's default drop_intermediate=True keeps only its end points and reads
    # FPR 1 at TPR >= 0.95; the exact threshold (19 of 20 ID) has FPR 19/20.
    scores = np.arange(20.0)
    assert ood_metrics(scores, scores)["fpr95"] == 0.95
    is_id = np.r_[np.ones(20), np.zeros(20)]
    fpr, tpr, _ = roc_curve(is_id, np.r_[scores, scores])
    assert fpr[np.argmax(tpr >= 0.95)] == 1.0


@pytest.mark.parametrize(
    "n_id, n_ood, decimals, seed",
    [
        (1000, 1000, None, 0),  # continuous, balanced
        (5000, 300, None, 1),  # unbalanced, more ID
        (200, 7000, None, 2),  # unbalanced, more OOD
        (3000, 2000, 1, 3),  # rounded: heavy ties across classes
        (4000, 50, 0, 4),  # very heavy ties, unbalanced
        (20, 20, 0, 5),  # few samples
        (1, 9, None, 6),  # single ID sample
    ],
)
def test_agrees_with_sklearn(n_id, n_ood, decimals, seed):
    rng = np.random.default_rng(seed)
    id_scores = rng.normal(1.0, 1.5, n_id)
    ood_scores = rng.normal(0.0, 1.0, n_ood)
    if decimals is not None:
        id_scores, ood_scores = id_scores.round(decimals), ood_scores.round(decimals)
    id_before, ood_before = id_scores.copy(), ood_scores.copy()
    got = ood_metrics(id_scores, ood_scores)
    np.testing.assert_array_equal(id_scores, id_before)  # inputs are not sorted in place
    np.testing.assert_array_equal(ood_scores, ood_before)
    expected = sklearn_metrics(id_scores, ood_scores)
    for key in KEYS:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, err_msg=key)


def test_torch_tensor_inputs():
    rng = np.random.default_rng(7)
    id_np, ood_np = rng.normal(1.0, 1.0, 500).round(1), rng.normal(0.0, 1.0, 400).round(1)
    expected = ood_metrics(id_np, ood_np)
    id_t = torch.tensor(id_np, dtype=torch.float64, requires_grad=True)
    assert ood_metrics(id_t, torch.from_numpy(ood_np)) == expected
    # bfloat16 has no numpy dtype; it widens exactly to float64, so the metrics must
    # equal those of the widened values.
    id_bf, ood_bf = torch.from_numpy(id_np).bfloat16(), torch.from_numpy(ood_np).bfloat16()
    got = ood_metrics(id_bf, ood_bf)
    assert got == ood_metrics(id_bf.double().numpy(), ood_bf.double().numpy())


@pytest.mark.parametrize(
    "id_scores, ood_scores",
    [
        (np.array([]), np.array([1.0])),
        (np.array([1.0]), np.array([])),
        (np.array([1.0, np.nan]), np.array([0.0])),
        (np.array([1.0]), np.array([0.0, np.inf])),
        (np.array([1.0]), np.array([-np.inf])),
        (np.ones((2, 2)), np.array([0.0])),
    ],
)
def test_invalid_inputs_raise(id_scores, ood_scores):
    with pytest.raises(ValueError):
        ood_metrics(id_scores, ood_scores)


def test_accuracy():
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    assert accuracy(torch.tensor([3, 3]), torch.tensor([3, 3])) == 1.0
    with pytest.raises(ValueError):
        accuracy(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        accuracy(np.array([]), np.array([]))
