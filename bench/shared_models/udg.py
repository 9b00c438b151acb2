"""UDG, Unsupervised Dual Grouping: Yang, Wang, Zou, Zhou, Ding, Peng, Wang, Chen, Li, Sun, Du, Zhou,
Zhang, Hendrycks, Li & Liu, "Semantically Coherent Out-of-Distribution Detection", ICCV 2021
(github.com/jingkang50/ICCV21_SCOOD `scood/trainers/udg_trainer.py`, `scood/k_means.py`; ported to
Jingkang50/OpenOOD `openood/trainers/udg_trainer.py`).

A classifier learns from the labelled ID set and an unlabelled auxiliary set; every epoch, before
training, the penultimate features of both sets (no augmentation, eval mode) are PCA-whitened to
`pca_dim` dimensions, L2-normalised and grouped by k-means into `clusters` groups
(`cluster_features`). Then, per cluster (`filter_clusters`), over the labels of its members (an ID
image's class; an auxiliary image's pseudo-label from the previous epoch, -1 before the first):
- if one label holds more than `id_purity` of the members, every auxiliary member takes it as its
  pseudo-label: a class c (the image trains as ID class c, with cross-entropy) or -1 (OE);
- otherwise every auxiliary member is -1 (OE), with weight `oe_boost` instead of 1 when the -1
  members hold more than `ood_purity` (at the reference's 0.8 / 0.8 this never happens: it needs
  ood_purity < id_purity).
So an auxiliary image escapes the OE loss only in a cluster more than 80% of one ID class
(counting auxiliary images that the last epoch put in that class). ID images always train with
their own labels. Then the cluster head, a linear layer on the penultimate features, is
re-initialised (weights N(0, 0.01), bias 0) and learns to predict each image's cluster.

Each step takes an ID batch (x_i, y_i) and an auxiliary batch (u_j) with pseudo-labels p_j and OE
weights w_j, in one forward pass; f are the class logits, g the cluster logits, c the cluster ids,
r = size(cluster)^-1/2 scaled to mean 1 over the clusters (`cluster_weights`):

    loss = mean_{x_i, and u_j with p_j != -1} CE(f, label)
           + 0.5 * mean_{u_j with p_j = -1} w_j * (logsumexp_k f_k(u_j) - mean_k f_k(u_j))
           + 0.1 * mean_{all images} r * CE(g, c)          (`udg_loss`; 0.5 = lambda_oe, 0.1 = lambda_aux)

The OE term is the cross-entropy to the uniform distribution (the reference's `rew_sce` with
soft label 1/K). The score is the maximum softmax probability (`methods/udg.py`). The saved module
meets the network contract through its classifier, so every post-hoc score (`energy[net=udg]`) and
CMG (`udg+cmg_e`) read it.

Demo cost, measured with `--cpus-per-trial 1` on a 2-core CPU loaded by other jobs (load average
about 7): far_fmnist (54,000 Fashion-MNIST images + 10,000 patches, 3 epochs) trains in 294 s wall
(about 2 min of CPU time), k-means 15-22 s of it per epoch; a step reads 128 ID + 256 auxiliary
images, so an epoch costs about three of the classifier's.

Not carried over from the reference:
- faiss's GPU k-means with random seeding: scikit-learn's KMeans with k-means++ seeding (one
  initialisation, `kmeans_iters` Lloyd iterations as faiss's `niter` = 20), its seed drawn from the
  run's generator (the reference draws `np.random.randint(1234)`);
- faiss's PCA whitening, which falls back to unreduced features when it gives NaN: scikit-learn's
  PCA, dropping components with less than 1e-6 of the largest variance before whitening, so
  flat directions are not blown up to unit variance;
- the cluster weights are scaled to mean 1 over the clusters that have members (the reference
  averages over all k, where an empty cluster counts 1e5: the same when none is empty);
- an OE term over no image is 0 (the reference's mean over nothing is NaN);
- ID and auxiliary images go through one forward pass (the reference makes two, so batch norm
  normalises each set by its own statistics), as in OE (SPEC.md section 6);
- its ResNet18 / WRN with `fc` and `fc_aux` on the pooled features: the harness's backbones and
  MLP head (cnn9 / resnet18 at paper scale), the cluster head and the clustering on the MLP's
  hidden features, the input of the final layer;
- SGD with Nesterov momentum: plain momentum (`bench.training.make_optimizer` has no Nesterov);
- its `best.ckpt`, the epoch with the best accuracy on the ID *test* set (`save_model`): the last
  epoch is used here; its ablations `idf_method` = conf / sort / none.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits
from torch import nn

from bench.augment import training_input
from bench.nets.backbones import Classifier, build_backbone
from bench.nets.contract import HoldsClassifier
from bench.recipes import RecipeTable, Stage, require
from bench.shared import SharedModel, register_shared_model
from bench.training import TrainInputs, make_optimizer, map_batches, shuffled_batches, to_float

log = logging.getLogger(__name__)


class UDGNetwork(HoldsClassifier):
    """The classifier and the cluster head on its penultimate features; the network contract is the classifier's."""

    def __init__(self, classifier: Classifier, clusters: int):
        super().__init__()
        self.classifier = classifier
        self.cluster_head = nn.Linear(classifier.final_layer.in_features, clusters)


@dataclass(frozen=True)
class UDGRecipe:
    stage: Stage  # the classifier, the ID batch size, the optimiser and its schedule
    aux_batch_size: int  # auxiliary images beside each ID batch
    clusters: int  # k of k-means (and the cluster head's outputs)
    pca_dim: int  # features are PCA-whitened to this many dimensions before k-means
    kmeans_iters: int = 20
    id_purity: float = 0.8  # a cluster whose one label holds more than this fraction gives it to its aux members
    ood_purity: float = 0.8  # else, aux members of a cluster more than this fraction aux get OE weight oe_boost
    oe_boost: float = 2.0
    lambda_oe: float = 0.5
    lambda_aux: float = 0.1  # the cluster head's loss

    def __post_init__(self):
        require(self, positive=("aux_batch_size", "clusters", "pca_dim", "kmeans_iters"),
                non_negative=("oe_boost", "lambda_oe", "lambda_aux"), fraction=("id_purity", "ood_purity"))
        if self.id_purity < 0.5:  # below 1/2 two labels could pass, and the cluster would have no one majority
            raise ValueError(f"id_purity must be >= 0.5 (got {self.id_purity!r})")


# paper: the reference's CIFAR settings (`configs/train/resnet18/cifar10_udg.yml`: SGD lr 0.1,
# momentum 0.9, weight decay 5e-4, cosine decay, 100 epochs, ID batch 128, auxiliary batch 256,
# k = 1000, PCA 256) on the CMG paper's backbones; the reference has no 28x28 setting, so
# gray28 takes the same. smoke and demo: the classifier's stages with the reference's 1:2 ID to
# auxiliary batch ratio; k and the PCA dimension scaled down so k-means costs seconds per epoch on
# a CPU (far_fmnist demo: 54,000 + 10,000 images in 200 clusters, about 320 a cluster; the
# reference has about 150); colour demo 5 of the classifier's 10 epochs, a UDG step costing about three.
_SGD = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4, cosine=True)
RECIPES = RecipeTable("udg", {
    ("gray28", "smoke"): UDGRecipe(Stage("cnn4", 8, 4, 64, 2e-3), 128, clusters=32, pca_dim=32),
    ("gray28", "demo"): UDGRecipe(Stage("cnn4", 16, 3, 128, 1e-3), 256, clusters=200, pca_dim=64),
    ("gray28", "paper"): UDGRecipe(Stage("cnn9", None, 100, 128, 0.1, **_SGD), 256, clusters=1000, pca_dim=256),
    ("colour", "smoke"): UDGRecipe(Stage("cnn4", 8, 4, 64, 2e-3), 128, clusters=32, pca_dim=32),
    ("colour", "demo"): UDGRecipe(Stage("cnn4", 32, 5, 128, 1e-3), 256, clusters=200, pca_dim=64),
    ("colour", "paper"): UDGRecipe(Stage("resnet18", None, 100, 128, 0.1, **_SGD), 256, clusters=1000, pca_dim=256),
})


def recipe_part(recipe) -> UDGRecipe:
    """This recipe's entry; crop+flip where the dataset asks for it (CIFAR), as for the classifier."""
    part = recipe.pick(RECIPES)
    return replace(part, stage=replace(part.stage, augment=recipe.augment))


def cluster_features(features: np.ndarray, clusters: int, pca_dim: int, iters: int, seed: int) -> np.ndarray:
    """Cluster id of each row: PCA-whitening to `pca_dim` dimensions, L2 normalisation, k-means."""
    pca = PCA(n_components=min(pca_dim, *features.shape), random_state=seed).fit(features)
    variance = pca.explained_variance_
    kept = variance > 1e-6 * variance[0]  # whitening a flat direction would give its rounding noise unit variance
    if not kept.any():  # every row the same: one cluster
        return np.zeros(len(features), dtype=np.int64)
    whitened = normalize(pca.transform(features)[:, kept] / np.sqrt(variance[kept]))
    kmeans = KMeans(n_clusters=min(clusters, len(features)), n_init=1, max_iter=iters, random_state=seed)
    return kmeans.fit_predict(whitened).astype(np.int64)


def filter_clusters(cluster_ids: np.ndarray, labels: np.ndarray, id_purity: float = 0.8, ood_purity: float = 0.8,
                    oe_boost: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """UDG's ID filtering: (new label, OE weight) of every sample from its cluster's labels (-1: OOD / unlabelled).

    A cluster with one label above `id_purity` gives it to all its members; the others get -1,
    with OE weight `oe_boost` where the -1 members are above `ood_purity`, 1 otherwise. The
    trainer reads the result for auxiliary samples only: ID samples keep their own labels.
    """
    new_labels = np.full(len(labels), -1, dtype=np.int64)
    oe_weights = np.ones(len(labels))
    for cluster in np.unique(cluster_ids):
        members = cluster_ids == cluster
        values, counts = np.unique(labels[members], return_counts=True)  # sorted: -1 first when present
        purity = counts / members.sum()
        top = purity.argmax()
        if purity[top] > id_purity:
            new_labels[members] = values[top]
        elif values[0] == -1 and purity[0] > ood_purity:
            oe_weights[members] = oe_boost
    return new_labels, oe_weights


def cluster_weights(cluster_ids: np.ndarray) -> np.ndarray:
    """Weight of each sample in the cluster loss: its cluster's size^-1/2, scaled to mean 1 over the clusters."""
    _, inverse, counts = np.unique(cluster_ids, return_inverse=True, return_counts=True)
    per_cluster = counts ** -0.5
    return (per_cluster / per_cluster.mean())[inverse]


def udg_loss(logits: torch.Tensor, cluster_logits: torch.Tensor, targets: torch.Tensor, oe_weights: torch.Tensor,
             cluster_ids: torch.Tensor, weights: torch.Tensor, lambda_oe: float = 0.5,
             lambda_aux: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, parts): CE where targets >= 0, OE weighted by `oe_weights` where targets == -1, weighted cluster CE."""
    labelled, outlier = targets >= 0, targets < 0
    ce = F.cross_entropy(logits[labelled], targets[labelled])
    to_uniform = torch.logsumexp(logits[outlier], dim=1) - logits[outlier].mean(dim=1)
    oe = (oe_weights[outlier] * to_uniform).mean() if outlier.any() else logits.new_zeros(())
    aux = (weights * F.cross_entropy(cluster_logits, cluster_ids, reduction="none")).mean()
    return ce + lambda_oe * oe + lambda_aux * aux, {"ce": ce, "oe": oe, "aux": aux}


def build(task, recipe):
    channels, size, _ = task.image_shape
    part = recipe_part(recipe)
    classifier = Classifier(build_backbone(part.stage.arch, channels, size, part.stage.width), task.num_classes)
    return UDGNetwork(classifier, part.clusters)


def _endless_batches(n: int, batch_size: int, generator: torch.Generator, device):
    """Shuffled index batches without end: the auxiliary set cycles beside the ID epochs, reshuffled each pass."""
    while True:
        yield from shuffled_batches(n, batch_size, generator, device)


def train(model: UDGNetwork, inputs: TrainInputs) -> UDGNetwork:
    part = recipe_part(inputs.recipe)
    stage, device = part.stage, inputs.device
    images, labels = inputs.train.images.to(device), inputs.train.labels.to(device)
    aux = inputs.extra.images.to(device)
    aux_labels = torch.full((len(aux),), -1, dtype=torch.long, device=device)  # pseudo-labels, kept across epochs
    transform = training_input(stage.augment)
    optimiser, schedule = make_optimizer(model.parameters(), stage, math.ceil(len(images) / stage.batch_size))
    aux_batches = _endless_batches(len(aux), part.aux_batch_size, inputs.generator, device)
    for epoch in range(stage.epochs):
        start = time.perf_counter()
        model.eval()
        features = torch.cat([map_batches(lambda x: model.forward_features(x)[1], chunk, transform=to_float)
                              for chunk in (images, aux)]).cpu().numpy()
        seed = int(torch.randint(2**31 - 1, (1,), generator=inputs.generator))
        with threadpool_limits(torch.get_num_threads()):  # k-means keeps to the trial's CPU share
            ids = cluster_features(features, part.clusters, part.pca_dim, part.kmeans_iters, seed)
        new_labels, oe_weights = filter_clusters(ids, np.concatenate([labels.cpu().numpy(), aux_labels.cpu().numpy()]),
                                                 part.id_purity, part.ood_purity, part.oe_boost)
        aux_labels = torch.as_tensor(new_labels[len(images):], device=device)
        aux_oe = torch.as_tensor(oe_weights[len(images):], dtype=torch.float32, device=device)
        id_cluster, aux_cluster = torch.as_tensor(ids, device=device).split([len(images), len(aux)])
        id_weight, aux_weight = torch.as_tensor(cluster_weights(ids), dtype=torch.float32,
                                                device=device).split([len(images), len(aux)])
        nn.init.normal_(model.cluster_head.weight, 0.0, 0.01)
        nn.init.zeros_(model.cluster_head.bias)
        cluster_seconds = time.perf_counter() - start

        model.train()
        totals, batches = dict.fromkeys(("ce", "oe", "aux"), 0.0), 0
        for index in shuffled_batches(len(images), stage.batch_size, inputs.generator, device):
            aux_index = next(aux_batches)
            logits, penultimate = model.forward_features(transform(torch.cat([images[index], aux[aux_index]])))
            loss, parts = udg_loss(
                logits, model.cluster_head(penultimate),
                torch.cat([labels[index], aux_labels[aux_index]]),
                torch.cat([torch.ones(len(index), device=device), aux_oe[aux_index]]),
                torch.cat([id_cluster[index], aux_cluster[aux_index]]),
                torch.cat([id_weight[index], aux_weight[aux_index]]),
                part.lambda_oe, part.lambda_aux)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            batches += 1
            for name, value in parts.items():
                totals[name] += float(value.detach())
        log.info("udg[%s] epoch %d/%d: %d clusters (%.1f s), aux %d OE (%d boosted), %d pseudo-labelled; %s",
                 inputs.task.name, epoch + 1, stage.epochs, len(np.unique(ids)), cluster_seconds,
                 int((aux_labels < 0).sum()), int((aux_oe != 1).sum()), int((aux_labels >= 0).sum()),
                 " ".join(f"{name} {value / max(batches, 1):.4f}" for name, value in totals.items()))
    return model.eval()


register_shared_model(SharedModel(
    kind="udg",
    description="UDG: classifier (backbone + MLP head) trained with per-epoch clustering of ID + auxiliary "
                "features, OE on auxiliary images outside ID-pure clusters and a cluster-prediction head",
    build=build,
    train=train,
    recipe_part=recipe_part,
    network=True,
    aux=True,
))
