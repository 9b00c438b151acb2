"""A user's own classifier: `bench.evaluate` and `bench evaluate --checkpoint`."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import bench
from bench.cli import main
from bench.errors import BenchError
from bench.evaluation import as_feature_classifier, post_hoc_method_names
from bench.method import MethodSpec, parse_methods
from bench.runner import Settings, run
from bench.store import ResultStore

TASK = {"dataset": "fashion_mnist", "partition": "0-5"}


def test_evaluating_the_cached_classifier_gives_the_runs_numbers(smoke_context, smoke_cache, tmp_path):
    """Same classifier, same data: the API and `bench run` agree to the last digit."""
    model = smoke_context(MethodSpec("softmax")).models["classifier"]
    frame = bench.evaluate(model, "setting1", ["softmax", "knn[k=10]"], train_limit=2000, test_limit=600, **TASK)
    assert list(frame["method"]) == ["softmax", "knn[k=10]"] and set(frame["ood_set"]) == {"unknown_classes"}
    settings = Settings(out=str(tmp_path / "out"), cache=smoke_cache)
    run("setting1", parse_methods("softmax,knn[k=10]"), datasets=["fashion_mnist"], partitions=["0-5"],
        scale="smoke", executor="local", settings=settings)
    records = {r["method"]: r for r in ResultStore(settings.out).records()}
    for row in frame.itertuples():
        assert row.auroc == records[row.method]["metrics"]["auroc"]
        assert row.accuracy == records[row.method]["metrics"]["accuracy"]


def test_every_post_hoc_method_runs_on_a_torchvision_model():
    """No forward_features: penultimate features are read at the input of the last nn.Linear (`fc`)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    frame = bench.evaluate(model, "setting1", normalize=([0.29], [0.35]), train_limit=300, test_limit=100, **TASK)
    assert set(frame["method"]) == set(post_hoc_method_names())
    assert {"maxlogit", "odin", "mahalanobis", "react", "knn", "openmax", "softmax", "energy"} <= set(frame["method"])
    assert frame[["auroc", "fpr95", "aupr_in", "aupr_out"]].notna().all().all()


def test_the_wrapper_reads_the_final_layers_input():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 6))
    wrapped = as_feature_classifier(net, torch.rand(2, 1, 28, 28), num_classes=6)
    logits, features = wrapped.forward_features(torch.rand(5, 1, 28, 28))
    assert features.shape == (5, 32) and torch.allclose(net[3](features), logits)


@pytest.mark.parametrize("net, message", [
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 4)), "needs 6 logits"),
    (nn.Sequential(nn.Conv2d(1, 6, 28), nn.Flatten()), "no nn.Linear layer"),
    (nn.Sequential(nn.Flatten(), nn.Linear(784, 6), nn.Tanh()), "last nn.Linear does not produce its logits"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(6)), "fails on images of shape"),
])
def test_models_that_cannot_be_read_get_a_clear_error(net, message):
    with pytest.raises(BenchError, match=message):
        as_feature_classifier(net, torch.rand(2, 1, 28, 28), num_classes=6)


def test_methods_that_train_more_models_are_refused():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 6))
    with pytest.raises(BenchError, match="cmg_e also needs cvae"):
        bench.evaluate(net, "setting1", ["softmax", "cmg_e"], **TASK)


def test_a_model_belongs_to_one_task():
    with pytest.raises(BenchError, match="belongs to one task"):
        bench.evaluate(nn.Linear(1, 1), "setting1", ["softmax"], dataset="fashion_mnist")


def test_cli_evaluates_a_checkpoint(smoke_context, tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(smoke_context(MethodSpec("softmax")).models["classifier"].state_dict(), path)
    status = main(["evaluate", "--checkpoint", str(path), "--arch", "cnn4", "--width", "8", "--protocol", "setting1",
                   "--dataset", "fashion_mnist", "--partition", "0-5", "--methods", "softmax,mahalanobis",
                   "--train-limit", "500", "--test-limit", "200", "--output", str(tmp_path / "table.csv")])
    assert status == 0
    out = capsys.readouterr().out
    assert "mahalanobis" in out and "unknown_classes" in out
    assert (tmp_path / "table.csv").read_text().startswith("method,ood_set,auroc")


def test_cli_torchvision_checkpoint_with_a_dataparallel_prefix(tmp_path, capsys):
    model = torchvision.models.resnet18(num_classes=6)
    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    # Fashion-MNIST is grayscale and torchvision's resnet18 wants 3 channels: a clear error, not a traceback.
    status = main(["evaluate", "--checkpoint", str(path), "--arch", "torchvision.resnet18", "--protocol", "setting1",
                   "--dataset", "fashion_mnist", "--partition", "0-5", "--methods", "softmax"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: the model fails on images of shape (1, 28, 28)") and "\n" not in err


@pytest.mark.parametrize("content, arch, message", [
    (b"not a checkpoint", "cnn4", "cannot read checkpoint"),
    (None, "cnn4", "does not fit cnn4 with 6 classes"),
    (None, "nonet", "backbone 'nonet' is not implemented"),
    (None, "torchvision.nonet", "torchvision has no model 'nonet'"),
])
def test_cli_bad_checkpoints_get_one_line(tmp_path, capsys, content, arch, message):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    status = main(["evaluate", "--checkpoint", str(path), "--arch", arch, "--protocol", "setting1",
                   "--dataset", "fashion_mnist", "--partition", "0-5"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
