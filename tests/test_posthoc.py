"""Post-hoc baselines on cases with known answers, and their sharing of one classifier."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.method import MethodSpec
from methods.knn import KNN, kth_neighbour_distance
from methods.mahalanobis import Mahalanobis
from methods.odin import ODIN
from methods.openmax import OpenMax, openmax_logits


def fitted(name, smoke_context, **options):
    return MethodSpec(name, tuple(sorted(options.items()))).build().fit(smoke_context(MethodSpec(name)))


def test_mahalanobis_on_a_hand_worked_two_class_problem():
    """Class means (0,0) and (10,0); within-class covariance diag(0.5, 2), so S^-1 = diag(2, 0.5)."""
    features = torch.tensor([[1, 0], [-1, 0], [0, 2], [0, -2], [11, 0], [9, 0], [10, 2], [10, -2]], dtype=torch.float)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    method = Mahalanobis()
    method.fit_outputs(torch.zeros(8, 2), features, labels)
    assert torch.allclose(method.means_, torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(method.precision_, torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)))
    queries = torch.tensor([[1.0, 1.0], [10.0, 4.0], [5.0, 0.0]])
    # (1,1): 1*2 + 1*0.5 to class 0; (10,4): 16*0.5 to class 1; (5,0): 25*2 to either.
    assert method.score_outputs(None, queries).tolist() == [-2.5, -8.0, -50.0]


def test_odin_without_temperature_or_perturbation_is_msp(smoke_context, smoke_test_images):
    id_images, _, ood_images = smoke_test_images
    odin = fitted("odin", smoke_context, temperature=1.0, epsilon=0.0)
    msp = fitted("softmax", smoke_context)
    for images in (id_images, ood_images):
        assert torch.allclose(odin.predict(images).score, msp.predict(images).score, atol=1e-6)


class _Normalised(nn.Module):
    """A toy classifier that normalises its input inside, like torchvision models expect."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.net, self.mean, self.std = net, mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def forward_features(self, x):
        penultimate = self.net[:-1]((x - self.mean) / self.std)
        return self.net[-1](penultimate), penultimate

    def forward(self, x):
        return self.forward_features(x)[0]

    @property
    def final_layer(self):
        return self.net[-1]


def test_odin_step_matches_the_reference_step_in_normalised_space():
    """The reference perturbs normalised inputs by eps * sign(grad) / std per channel."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.5, 0.2])
    x = torch.rand(7, 3, 4, 4)
    temperature, epsilon = 1000.0, 0.05
    odin = ODIN(temperature=temperature, epsilon=epsilon)
    odin.classifier_ = _Normalised(net, mean, std).eval()

    normalised = ((x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).requires_grad_(True)
    logits = net(normalised)
    loss = nn.functional.cross_entropy(logits / temperature, logits.argmax(1))
    (gradient,) = torch.autograd.grad(loss, normalised)
    stepped = normalised.detach() - epsilon * gradient.sign() / std.view(1, -1, 1, 1)
    expected = (net(stepped) / temperature).softmax(1).max(1).values
    assert torch.allclose(odin.predict(x).score, expected.detach(), atol=1e-6)


def test_odin_perturbation_raises_id_scores(smoke_context, smoke_test_images):
    id_images = smoke_test_images[0]
    plain = fitted("odin", smoke_context, epsilon=0.0).predict(id_images).score
    perturbed = fitted("odin", smoke_context).predict(id_images).score
    assert (perturbed >= plain - 1e-7).float().mean() > 0.95


def test_react_without_clipping_is_energy_and_clips_at_the_training_percentile(smoke_context, smoke_test_images):
    id_images, _, ood_images = smoke_test_images
    energy = fitted("energy", smoke_context)
    unclipped = fitted("react", smoke_context, percentile=100)
    for images in (id_images, ood_images):
        assert torch.allclose(unclipped.predict(images).score, energy.predict(images).score, atol=1e-5)
    react = fitted("react", smoke_context)
    ctx = smoke_context(MethodSpec("react"))
    _, train_features = react.classifier_.forward_features(ctx.train_images())
    assert (train_features <= react.threshold_).float().mean().item() == pytest.approx(0.90, abs=0.005)


def test_knn_matches_brute_force_in_every_block_size():
    torch.manual_seed(0)
    bank, queries = torch.randn(300, 8), torch.randn(70, 8)
    brute = torch.cdist(queries, bank).sort(dim=1).values[:, 4]
    for block in (7, 64, 4096):
        assert torch.allclose(kth_neighbour_distance(queries, bank, k=5, block=block), brute, atol=1e-5)


def test_knn_scores_normalised_features():
    torch.manual_seed(1)
    features, queries = torch.randn(50, 4), torch.randn(9, 4)
    method = KNN(k=3)
    method.fit_outputs(None, features * 10, None)  # scale does not matter after L2 normalisation
    unit = nn.functional.normalize
    expected = -torch.cdist(unit(queries, dim=1), unit(features, dim=1)).sort(dim=1).values[:, 2]
    assert torch.allclose(method.score_outputs(None, queries * 3), expected, atol=1e-5)


def test_knn_refuses_k_larger_than_the_training_set():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="k <= the 10 training images"):
        KNN(k=50).fit_outputs(None, torch.randn(10, 4), None)


def test_openmax_leaves_an_image_at_its_class_mean_alone():
    """Distance 0 to the class mean gives Weibull CDF 0: nothing shrinks, the unknown logit is 0."""
    logits = torch.tensor([[3.0, 1.0, 0.5]], dtype=torch.float64)
    shape, scale = torch.full((3,), 2.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    distances = torch.zeros(1, 3, dtype=torch.float64)
    recalibrated = openmax_logits(logits, distances, shape, scale, alpha=3)
    assert recalibrated.tolist() == [[3.0, 1.0, 0.5, 0.0]]
    assert recalibrated.argmax(1).item() == 0  # not rejected


def test_openmax_with_zero_tail_distances_rejects_nothing_that_sits_on_a_mean():
    """Every training image exactly on its class mean: the fitted tails are all 0."""
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    method = OpenMax(tail_size=2, alpha=2)
    method.fit_outputs(logits, None, labels)
    assert method.scale_.tolist() == [0.0, 0.0]
    scores = method.score_outputs(torch.tensor([[4.0, 0.0], [0.0, 4.0]]), None)
    expected_unknown = 1 / (1 + torch.exp(torch.tensor(4.0)) + 1)
    assert torch.allclose(-scores, expected_unknown.expand(2), atol=1e-6)  # the plain softmax with a 0 logit


def test_openmax_shrinks_the_top_class_of_a_far_image():
    logits = torch.tensor([[5.0, 1.0]], dtype=torch.float64)
    shape, scale = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    near = openmax_logits(logits, torch.full((1, 2), 0.01, dtype=torch.float64), shape, scale, alpha=1)
    far = openmax_logits(logits, torch.full((1, 2), 50.0, dtype=torch.float64), shape, scale, alpha=1)
    assert far[0, -1] > near[0, -1] and far[0, 1] == near[0, 1] == 1.0  # only the top alpha=1 class moves
    assert far.softmax(1)[0, -1] > 0.5 > near.softmax(1)[0, -1]


def test_fitted_statistics_come_from_training_data_only(smoke_context):
    ctx = smoke_context(MethodSpec("mahalanobis"))
    seen = []

    class Recording(Mahalanobis):
        def fit_outputs(self, logits, penultimate, labels):
            seen.append(len(labels))
            super().fit_outputs(logits, penultimate, labels)

    Recording().fit(ctx)
    assert seen == [len(ctx.train)]


POST_HOC = "softmax,maxlogit,energy,odin,mahalanobis,react,knn,openmax,cmg_e"


def test_all_post_hoc_methods_share_one_classifier_per_partition(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    status = main(["run", "--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5,1-6",
                   "--methods", POST_HOC, "--scale", "smoke", "--executor", "local",
                   "--out", str(out), "--cache", str(cache)])
    assert status == 0
    assert len(list((cache / "classifier").iterdir())) == 2  # one per partition, not one per method
    records = [json.loads(path.read_text()) for path in (out / "trials").glob("*.json")]
    assert len(records) == 18
    for partition in ("0-5", "1-6"):
        keys = {r["timing"]["shared_models"]["classifier"]["key"] for r in records if r["partition"] == partition}
        assert len(keys) == 1
    table = capsys.readouterr().out
    for name in POST_HOC.split(","):
        assert name in table
