"""SupCSI: rotations and their labels, the loss's positives, the ensemble score by hand, the frozen
encoder of step 2, and the method end to end on real Fashion-MNIST."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

import bench.shared_models.csi as procedure
from bench.cli import main
from bench.data import ImageSet
from bench.method import MethodSpec
from bench.recipes import Stage
from bench.shared_models.csi import CSINet, joint_labels, pretrain_loss, rotate, train_heads
from bench.training import TrainInputs
from methods.csi import CSI, ensemble_logits, msp


def identity(image):
    return image


def test_the_four_rotations_and_their_labels_on_a_hand_made_image():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    rotated, shifts = rotate(image)
    # rot90 by k quarter turns, counter-clockwise.
    expected = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]
    assert rotated[:, 0].tolist() == expected
    assert shifts.tolist() == [0, 1, 2, 3]
    # Two images of classes 2 and 0 among K=3: rotation-major, joint label = class + K * rotation.
    pair = torch.cat([image, image + 10])
    rotated, shifts = rotate(pair)
    assert torch.equal(rotated[1 * 2 + 1], torch.rot90(pair[1], 1, dims=(1, 2)))  # rotation 1 of image 1
    assert shifts.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert joint_labels(torch.tensor([2, 0]).repeat(4), shifts, 3).tolist() == [2, 0, 5, 3, 8, 6, 11, 9]


def test_sup_csi_loss_positives_are_same_class_and_rotation(monkeypatch):
    """2 classes x 4 rotations: the encoder and projector pass samples through and the transform is
    the identity, so each sample given to the loss is identified by its pixels; the labels must make
    exactly the samples of the same (class, rotation) positives."""
    torch.manual_seed(0)
    images = torch.rand(4, 1, 5, 5)
    classes = torch.tensor([0, 0, 1, 1])
    seen = {}

    def recording_supcon(embeddings, labels, temperature):
        seen.update(samples=embeddings, labels=labels, temperature=temperature)
        return embeddings.sum()

    monkeypatch.setattr(procedure, "supcon_loss", recording_supcon)
    model = SimpleNamespace(backbone=lambda x: x, projector=lambda x: x)
    pretrain_loss(identity, 0.07, num_classes=2)(model, images, classes)
    samples, labels = seen["samples"], seen["labels"]
    assert seen["temperature"] == 0.07 and len(samples) == len(labels) == 4 * 2 * 4  # images x views x rotations

    origin = []  # (image, rotation) of each sample, read from its pixels
    for sample in samples:
        matches = [(i, k) for i in range(4) for k in range(4) if torch.equal(sample, torch.rot90(images[i], k, (1, 2)))]
        assert len(matches) == 1
        origin.append(matches[0])
    assert sorted(origin) == sorted((i, k) for i in range(4) for k in range(4) for _view in range(2))
    for a, (image_a, rot_a) in enumerate(origin):
        for b, (image_b, rot_b) in enumerate(origin):
            same_class_and_rotation = bool(classes[image_a] == classes[image_b]) and rot_a == rot_b
            assert bool(labels[a] == labels[b]) == same_class_and_rotation
    # So the two views of an image at one rotation are positives, its other rotations negatives.


def test_ensemble_score_by_hand():
    """K=2: rotation k's block is joint logits [2k, 2k+1]; the other blocks must be ignored."""
    joint = torch.full((4, 1, 8), 50.0)  # distractors everywhere
    for k, block in enumerate([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [2.0, 2.0]]):
        joint[k, 0, 2 * k:2 * k + 2] = torch.tensor(block)
    logits = ensemble_logits(joint, num_classes=2)
    assert logits.tolist() == [[1.5, 1.0]]  # (1+3+0+2)/4, (0+0+2+2)/4
    # ID score: max softmax over the K=2 classes = e^1.5 / (e^1.5 + e^1) = 1 / (1 + e^-0.5).
    assert float(msp(logits)) == pytest.approx(1 / (1 + math.exp(-0.5)), rel=1e-6)
    assert logits.argmax(1).tolist() == [0]


def test_predict_pairs_each_rotation_with_its_own_block():
    torch.manual_seed(0)
    net = CSINet("cnn4", 1, 8, 2, num_classes=3).eval()
    method = CSI()
    method.net_ = net
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        blocks = [net.joint_head(net.backbone(torch.rot90(x, k, (2, 3))))[:, 3 * k:3 * k + 3] for k in range(4)]
        expected = (sum(blocks) / 4).softmax(1)
        prediction = method.predict(x)
    assert torch.allclose(prediction.score, expected.max(1).values, atol=1e-6)
    assert torch.equal(prediction.label, expected.argmax(1))


def test_step_two_trains_the_heads_on_a_frozen_encoder():
    torch.manual_seed(0)
    net = CSINet("cnn4", 1, 8, 2, num_classes=2)
    encoder = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    projector = {k: v.clone() for k, v in net.projector.state_dict().items()}
    heads = [head.weight.clone() for head in net.heads()]
    data = ImageSet(torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 2)
    task = SimpleNamespace(name="toy")
    for augment in (False, True):
        inputs = TrainInputs(task, data, None, torch.device("cpu"), torch.Generator().manual_seed(0), {}, 0)
        train_heads(net, inputs, Stage(None, None, 2, 16, 1e-2, augment=augment), identity)
        assert all(torch.equal(v, encoder[k]) for k, v in net.backbone.state_dict().items())  # BN stats too
        assert all(torch.equal(v, projector[k]) for k, v in net.projector.state_dict().items())
        assert all(not torch.equal(head.weight, before) for head, before in zip(net.heads(), heads))
        assert all(p.requires_grad for p in net.parameters())


def test_csi_end_to_end_at_smoke_scale(smoke_context, smoke_test_images):
    id_images, id_labels, ood_images = smoke_test_images
    ctx = smoke_context(MethodSpec("csi"))
    method = MethodSpec("csi").build().fit(ctx)
    with torch.no_grad():
        id_prediction, ood_prediction = method.predict(id_images), method.predict(ood_images)
    assert torch.isfinite(id_prediction.score).all() and torch.isfinite(ood_prediction.score).all()
    assert ((id_prediction.score > 0) & (id_prediction.score <= 1)).all()
    assert (id_prediction.label == id_labels).float().mean() > 0.5
    # Without the ensemble it is CSI's single inference: the softmax score of the network's linear head.
    single = MethodSpec("csi", (("ensemble", False),)).build().fit(ctx).predict(id_images)
    linear = MethodSpec("softmax", (("net", "csi"),)).build().fit(ctx).predict(id_images)
    assert torch.allclose(single.score, linear.score, atol=1e-6) and torch.equal(single.label, linear.label)


def test_csi_energy_and_plus_cmg_e_share_one_network(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["run", "--methods", "csi,energy[net=csi],csi+cmg_e", "--protocol", "setting1",
            "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local",
            "--out", str(out), "--cache", str(cache)]
    assert main(argv) == 0
    assert len(list((cache / "csi").iterdir())) == 1  # one network trained, read by all three
    records = [json.loads(path.read_text()) for path in (out / "trials").glob("*.json")]
    assert sorted(r["method"] for r in records) == ["csi", "csi+cmg_e", "energy[net=csi]"]
    assert len({r["timing"]["shared_models"]["csi"]["key"] for r in records}) == 1
