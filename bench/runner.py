"""Expand (protocol x datasets x partitions x seeds x methods) into trials and run them.

Shared models are jobs of their own: each distinct (kind, key) is trained exactly once,
before the trials that need it, on Ray (fractional CPUs/GPUs per job; a local Ray started
here, or an existing cluster: `address`) or in-process. Nothing here knows any method,
dataset or protocol by name.

The driver (the process that calls `run`) is the only writer of result records: a trial job
returns its record and the driver writes it the moment it arrives, so a killed run loses
nothing done. Every path is resolved on the driver (`Settings.resolved`) and jobs get the
driver's absolute paths, never their own working directory or environment; trial ids are
computed on the driver and handed to the jobs. Jobs write only the model cache.

A job that fails never stops the others: a trial that raises, or whose scores are not one
finite number per image, becomes a failed record (`ResultStore.write_failure`), and so does
every trial of a shared model that fails to train. Both executors run the same job
functions (`model_job`, `trial_job`), which return outcomes instead of raising. File locks
in the cache and the store let several runs share them (`ModelCache.lock`; the driver holds
`ResultStore.lock` of a trial from before it starts until its record is written: `Claims`).
"""
from __future__ import annotations

import datetime
import functools
import importlib
import logging
import os
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from filelock import Timeout

from bench import progress, provenance
from bench.data import DATASETS, data_root, load_split
from bench.errors import BenchError
from bench.method import FitContext, MethodSpec
from bench.protocol import PROTOCOLS, DataRef, Task
from bench.recipes import Override, Recipe, describe_part, recipe_for
from bench.shared import SHARED_MODELS, model_closure, uses_aux
from bench.scoring import load_ref, load_validation, score_task
from bench.training import TrainInputs
from bench.store import PROJECT_PACKAGES, ModelCache, ResultStore, cache_location, code_hash, content_key, is_url, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Where things live and how much hardware a job gets; the same for every job of a run.

    `out` and `cache` are local folders or fsspec URLs (`bench.store.Storage`); `data_root` a local folder.
    """

    out: str
    cache: str | None = None
    data_root: str | None = None
    cpus_per_trial: float | None = None  # None: 1 per Ray job, every core in-process
    gpus_per_trial: float | None = None  # None: 1 per job when a GPU is visible, else 0
    retrain: bool = False
    provenance: dict = field(default_factory=dict)

    def resolved(self) -> "Settings":
        """These settings as this process sees them, for every job wherever it runs: the defaults of the cache
        ($BENCH_CACHE, else ~/.cache/bench/models) and the data root ($BENCH_DATA, else ~/.cache/bench/data)
        filled in, and every local path made absolute here."""
        if self.data_root is not None and is_url(self.data_root):
            raise BenchError(f"--data-root {self.data_root}: datasets are read from a local (or mounted) folder, "
                             "not a URL")
        return replace(self, out=resolve(self.out), cache=cache_location(self.cache),
                       data_root=resolve(data_root(self.data_root)))

    def threads(self) -> int:
        return max(1, int(self.cpus_per_trial or os.cpu_count() or 1))

    def device(self) -> torch.device:
        if self.gpus_per_trial and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")


@dataclass(frozen=True)
class ModelJob:
    kind: str
    key: str
    task: Task
    recipe: Recipe
    seed: int
    dependencies: tuple[tuple[str, str], ...]  # (kind, key) of the models this one is built from


@dataclass(frozen=True)
class Trial:
    task: Task
    seed: int
    method: MethodSpec
    recipe: Recipe
    models: tuple[tuple[str, str], ...]  # (kind, key) of every shared model the method gets
    recipe_tables: tuple[str, ...] = ()  # the recipe tables its numbers depend on (which overrides can reach it)

    @functools.cached_property
    def trial_id(self) -> str:
        """Everything that determines the trial's numbers: data, seed, method and its options, the code
        that fits and scores it, its own recipe part, the data limits and the keys of its models.

        Computed once per Trial, on the driver (jobs are handed it: code edited during a run changes no id)."""
        method = self.method.build()
        return content_key({
            "task": self.task.name,
            "data": [ref.describe() for ref in self.task.data_refs(aux=uses_aux(kind for kind, _ in self.models))],
            "seed": self.seed,
            "method": self.method.label,
            "code": code_hash(*method.code(), "bench.scoring"),
            "recipe": {"scale": self.recipe.scale, "train_limit": self.recipe.train_limit,
                       "test_limit": self.recipe.test_limit, "method": describe_part(method.recipe_part(self.recipe))},
            "models": self.models,
        })

    @property
    def name(self) -> str:
        return f"{self.task.name}/seed{self.seed}/{self.method.label}"


def task_recipe(task: Task, scale: str, overrides: tuple[Override, ...] = ()) -> Recipe:
    source = DATASETS.get(task.id_train.dataset)
    return recipe_for(scale, task.image_shape, augment=source.train_augment, overrides=overrides)


def model_job_for(kind: str, task: Task, recipe: Recipe, seed: int, jobs: dict) -> tuple[str, str]:
    """(kind, key) of the shared model of `kind` for a task, recipe and seed; its job and those of the models it is
    built from are added to `jobs` (in dependency order), each with only the overrides that reach its parts."""
    spec = SHARED_MODELS.get(kind)
    recipe, _ = recipe.narrowed(*(SHARED_MODELS.get(k).recipe_part for k in model_closure([kind])))
    deps = tuple(model_job_for(dep, task, recipe, seed, jobs) for dep in spec.requires)
    key = spec.key(task, recipe, seed, dict(deps))
    jobs.setdefault((kind, key), ModelJob(kind, key, task, recipe, seed, deps))
    return kind, key


def plan(tasks: list[Task], methods: list[MethodSpec], seeds: list[int], scale: str,
         overrides: tuple[Override, ...] = ()) -> tuple[list[Trial], dict]:
    """Trials plus the shared-model jobs they need, keyed by (kind, key), in dependency order.

    Each trial and model carries only the recipe overrides that reach its own recipe parts.
    """
    jobs: dict[tuple[str, str], ModelJob] = {}
    trials = []
    for task in tasks:
        full = task_recipe(task, scale, overrides)
        full.check()
        for method in methods:
            kinds = method.requires()
            if task.extra_train is None and uses_aux(kinds):
                raise BenchError(f"{method.label} trains on auxiliary outlier data and protocol {task.protocol} names "
                                 "none for its tasks; give one with --aux NAME (e.g. --aux natural_patches)")
            parts = (method.build().recipe_part, *(SHARED_MODELS.get(k).recipe_part for k in model_closure(kinds)))
            recipe, tables = full.narrowed(*parts)
            for seed in seeds:
                models = tuple(model_job_for(kind, task, recipe, seed, jobs) for kind in kinds)
                trials.append(Trial(task, seed, method, recipe, models, tuple(tables)))
    return trials, jobs


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def build_cached(kind: str, key: str, task: Task, recipe: Recipe, settings: Settings) -> torch.nn.Module:
    spec = SHARED_MODELS.get(kind)
    module = ModelCache(settings.cache).load_module(kind, key, lambda: spec.build(task, recipe))
    return module.to(settings.device()).eval()


def train_shared_model(job: ModelJob, settings: Settings, *_dependencies) -> dict:
    """Train and cache one shared model unless the cache has it; return its metadata.

    Check, training and saving happen under the model's lock in the cache: a second run that
    needs the model meanwhile waits, then finds it cached. `_dependencies` are only there so
    that Ray starts this job after the ones it needs.
    """
    cache = ModelCache(settings.cache)
    if cache.has(job.kind, job.key) and not settings.retrain:
        return cache.meta(job.kind, job.key)
    lock = cache.lock(job.kind, job.key)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another run is making %s for %s; waiting for it", job.kind, job.task.name)
        lock.acquire()
    try:
        if cache.has(job.kind, job.key) and (not settings.retrain or _saved_since(cache, job, settings)):
            return cache.meta(job.kind, job.key)
        return _train(job, settings, cache)
    finally:
        lock.release()


def _saved_since(cache: ModelCache, job: ModelJob, settings: Settings) -> bool:
    """Whether a cached model was saved after this run started (with --retrain, by a concurrent run: keep it)."""
    started = settings.provenance.get("started")
    saved = cache.saved_at(job.kind, job.key)
    if not started or saved is None:
        return False
    return saved >= datetime.datetime.fromisoformat(started)


def _train(job: ModelJob, settings: Settings, cache: ModelCache) -> dict:
    torch.set_num_threads(settings.threads())
    device = settings.device()
    generator = seed_everything(job.seed)
    spec = SHARED_MODELS.get(job.kind)
    train = load_ref(job.task.id_train, settings, job.recipe.train_limit, job.seed)
    dependencies = {kind: build_cached(kind, key, job.task, job.recipe, settings) for kind, key in job.dependencies}
    extra = load_ref(job.task.extra_train, settings, job.recipe.train_limit, job.seed) if spec.aux else None
    log.info("training %s for %s (seed %d, %d images) on %s", job.kind, job.task.name, job.seed, len(train), device)
    start = time.perf_counter()
    model = spec.build(job.task, job.recipe).to(device)
    model = spec.train(model, TrainInputs(job.task, train, job.recipe, device, generator, dependencies, job.seed,
                                          settings.data_root, extra))
    seconds = time.perf_counter() - start
    meta = {
        "kind": job.kind, "key": job.key, "task": job.task.name, "seed": job.seed,
        "recipe": {**job.recipe.describe(), "part": describe_part(spec.recipe_part(job.recipe))},
        "train_seconds": seconds, "device": str(device),
        "dependencies": dict(job.dependencies), "train_images": len(train),
        "provenance": {**settings.provenance, **provenance.node()},  # the run's (driver) and this node's
    }
    cache.save(job.kind, job.key, {k: v.cpu() for k, v in model.state_dict().items()}, meta)
    log.info("trained %s for %s in %.1fs", job.kind, job.task.name, seconds)
    return meta


def _shared_models(pairs, cache: ModelCache) -> dict[str, dict]:
    """Every shared model a trial used, dependencies included: its key, training time and where it trained.

    Where it trained matters because training is not bitwise reproducible across machines, thread counts
    or devices, and a key leaves those out: two recipes compared cell by cell are paired most tightly when
    both ends trained alike, and only the records can say whether they did."""
    charged: dict[str, dict] = {}
    pending = list(pairs)
    while pending:
        kind, key = pending.pop()
        meta = cache.meta(kind, key)
        node = meta.get("provenance", {})
        trained_on = {"device": meta.get("device"), "platform": node.get("platform"), "cpu": node.get("cpu"),
                      "gpu": node.get("gpu")}
        charged[kind] = {"key": key, "train_seconds": meta["train_seconds"], "trained_on": trained_on}
        pending.extend(meta.get("dependencies", {}).items())
    return charged


class InvalidScores(BenchError):
    """A method returned scores that are not one finite number per image."""


class CheckedScores:
    """A fitted method whose every prediction is checked before scoring turns it into metrics."""

    def __init__(self, method, label: str):
        self.method, self.label = method, label

    def predict(self, x: torch.Tensor):
        prediction = self.method.predict(x)
        score, images = prediction.score, len(x)
        if score.dim() != 1 or len(score) != images or len(prediction.label) != images:
            raise InvalidScores(f"method {self.label} returned scores of shape {tuple(score.shape)} and labels of shape "
                                f"{tuple(prediction.label.shape)} for {images} images; it must return one of each per image")
        bad = int((~torch.isfinite(score.detach())).sum())
        if bad:
            raise InvalidScores(f"method {self.label} returned {bad} NaN or infinite scores of {images}")
        return prediction

    def __getattr__(self, name):
        return getattr(self.method, name)


def run_trial(trial: Trial, settings: Settings, trial_id: str) -> tuple[dict, dict]:
    """Fit one method on one task and seed, score the test sets; return the record and the per-image results
    (`Scores.samples`), which the driver writes.

    `trial_id` is the driver's; the record's provenance joins the run's (driver: command, code version,
    start) with this node's (host, GPU, library versions)."""
    torch.set_num_threads(settings.threads())
    device = settings.device()
    generator = seed_everything(trial.seed)
    task, recipe = trial.task, trial.recipe
    train = load_ref(task.id_train, settings, recipe.train_limit, trial.seed)
    models = {kind: build_cached(kind, key, task, recipe, settings) for kind, key in trial.models}
    method = trial.method.build()
    from bench.features import FeatureCache  # the models' outputs per data split, computed once for every method

    start = time.perf_counter()
    method.fit(FitContext(task, train, models, recipe, trial.seed, device, generator,
                          features=FeatureCache.for_trial(settings.cache, trial.models),
                          validation=load_validation(task, settings, recipe.test_limit, trial.seed)))
    fit_seconds = time.perf_counter() - start
    scores = score_task(CheckedScores(method, trial.method.label), task, settings, recipe.test_limit, trial.seed)

    shared = _shared_models(trial.models, ModelCache(settings.cache))
    shared_seconds = sum(item["train_seconds"] for item in shared.values())
    record = {
        "trial_id": trial_id,
        "protocol": task.protocol,
        "dataset": task.dataset,
        "partition": task.partition,
        "seed": trial.seed,
        "method": trial.method.label,
        "method_name": trial.method.name,
        "method_params": method.params(),
        "scale": recipe.scale,
        "recipe": {**recipe.describe(), "tables": list(trial.recipe_tables),
                   "method": describe_part(method.recipe_part(recipe))},
        "data": {"id_train": len(train), **scores.sizes},
        "data_key": content_key([ref.describe() for ref in task.data_refs(aux=False)]),
        # the auxiliary set its models trained on (None: none did)
        "aux": task.extra_train.describe() if task.extra_train and uses_aux(k for k, _ in trial.models) else None,
        "skipped_ood_sets": list(task.skipped_ood_sets),
        "metrics": scores.metrics,
        "ood_sets": scores.ood_sets,
        "timing": {
            "summary": {
                "fit_s": fit_seconds,
                "score_s": scores.seconds,
                "shared_s": shared_seconds,
                "total_s": fit_seconds + scores.seconds + shared_seconds,
            },
            "shared_models": shared,
        },
        "device": str(device),
        "provenance": {**settings.provenance, **provenance.node(), "finished": provenance.now()},
    }
    return record, scores.samples


def _loadable(ref: DataRef) -> tuple:
    """What loading a ref depends on (classes are picked afterwards), so each set is checked once."""
    return ref.dataset, ref.split, ref.preprocess


def check_data(tasks: list[Task], settings: Settings, skip_missing: bool = False) -> list[Task]:
    """The tasks, once every set they need loads; fail before any training otherwise.

    The error names every missing set at once. With `skip_missing`, missing OOD sets are
    dropped from their tasks (and recorded as skipped) instead; missing ID data still fails.
    """
    problems = {}
    for loadable in dict.fromkeys(_loadable(ref) for task in tasks for ref in task.data_refs()):
        try:
            load_split(*loadable[:2], settings.data_root, loadable[2])
        except BenchError as err:
            problems[loadable] = str(err)
    if not problems:
        return tasks
    fatal = [problems[_loadable(ref)] for task in tasks for ref in task.required_refs() if _loadable(ref) in problems]
    if not skip_missing or fatal:
        raise BenchError(" | ".join(dict.fromkeys(fatal if skip_missing else problems.values())))
    ready = [task.without([name for name, ref in task.ood_tests.items() if _loadable(ref) in problems])
             for task in tasks]
    empty = [task.name for task in ready if not task.ood_tests]
    if empty:
        raise BenchError(f"no OOD set of {', '.join(empty)} is present: " + " | ".join(dict.fromkeys(problems.values())))
    for task in ready:
        if task.skipped_ood_sets:
            log.warning("%s: skipping missing OOD sets %s", task.name, ", ".join(task.skipped_ood_sets))
    return ready


def _error(err: BaseException, trace: str | None = None) -> dict:
    """What a failed record says about an exception: its type, its message and where it came from."""
    return {"type": type(err).__name__, "message": str(err) or type(err).__name__,
            "traceback": trace if trace is not None else traceback.format_exc()}


def _failed_dependency(outcomes) -> dict | None:
    """The error of the first shared model among `outcomes` that failed, naming it, else None."""
    for outcome in outcomes:
        if "error" in outcome:
            kind, key = outcome["model"]
            cause = outcome["error"]
            if "model" in cause:  # it failed because a model it needs failed: name that one
                return cause
            return {"type": "SharedModelFailed", "model": {"kind": kind, "key": key},
                    "message": f"shared model {kind} ({key}) failed to train: {cause['type']}: {cause['message']}",
                    "traceback": cause["traceback"]}
    return None


def model_job(job: ModelJob, settings: Settings, *dependencies: dict) -> dict:
    """Train one shared model unless the cache has it: {"model", "meta"}, or {"model", "error"}.

    `dependencies` are the outcomes of the jobs it needs (Ray starts it after them); when one of
    them failed, this one fails too, without training.
    """
    outcome = {"model": (job.kind, job.key)}
    failed = _failed_dependency(dependencies)
    if failed:
        return {**outcome, "error": failed}
    try:
        return {**outcome, "meta": train_shared_model(job, settings)}
    except Exception as err:  # noqa: BLE001 - any failure of one model is recorded, never raised
        return {**outcome, "error": _error(err)}


def trial_job(trial: Trial, trial_id: str, settings: Settings, *dependencies: dict) -> dict:
    """Run one trial: {"trial_id", "record", "samples"} or {"trial_id", "error"}; it writes nothing (the driver does).
    `dependencies`: outcomes of the model jobs it waits on."""
    outcome = {"trial_id": trial_id}
    failed = _failed_dependency(dependencies)
    if failed:
        return {**outcome, "error": failed}
    try:
        record, samples = run_trial(trial, settings, trial_id)
        return {**outcome, "record": record, "samples": samples}
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, never raised
        return {**outcome, "error": _error(err), "node": provenance.node()}


class Claims:
    """The driver's hold on the trials it runs: each trial's store lock, from before its job starts until its
    record is written, so concurrent runs on one store never run a trial twice at once (locks: local stores)."""

    def __init__(self, store: ResultStore, force: bool):
        self.store, self.force, self.held = store, force, {}

    def take(self, trial_id: str, wait: bool) -> str:
        """"run" (claimed: run it), "done" (another run has finished it meanwhile) or, without `wait`,
        "busy" (another run is running it now: ask again later)."""
        lock = self.store.lock(trial_id)
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return "busy"
        if not self.force and self.store.has(trial_id):
            lock.release()
            return "done"
        self.held[trial_id] = lock
        return "run"

    def release(self, trial_id: str) -> None:
        lock = self.held.pop(trial_id, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for trial_id in list(self.held):
            self.release(trial_id)


class LocalExecutor:
    """Runs jobs one after another in this process: for debugging and for tests."""

    def __init__(self, address: str | None = None):
        if address:
            raise BenchError(f"--address {address} needs --executor ray (the local executor runs every job in this "
                             "process)")

    def check(self, settings: Settings) -> Settings:
        """The settings, with their defaults, checked against this machine."""
        return _on_this_machine(settings)

    def run(self, jobs: list[ModelJob], trials: list[Trial], settings: Settings, claims: Claims, finish) -> None:
        outcomes = {}
        for job in jobs:  # dependency order
            deps = [outcomes[pair] for pair in job.dependencies if pair in outcomes]
            outcomes[job.kind, job.key] = outcome = model_job(job, settings, *deps)
            finish(outcome)
        for trial in trials:
            if claims.take(trial.trial_id, wait=True) == "done":
                finish({"trial_id": trial.trial_id, "taken": True})
                continue
            finish(trial_job(trial, trial.trial_id, settings, *(outcomes[pair] for pair in trial.models
                                                               if pair in outcomes)))


FORWARDED_ENV = ("BENCH_DOWNLOAD", "BENCH_FEATURE_CACHE", "BENCH_PROGRESS")  # read by jobs; every path goes through Settings instead


def runtime_env() -> dict:
    """How the project's code reaches Ray's workers on every node: its packages (`bench`, `methods`, `protocols`),
    uploaded by Ray from this checkout, and the environment variables that change what jobs do.

    Each node needs the dependencies installed (torch, ...); nothing else of this machine is read there.
    """
    packages = [importlib.import_module(name) for name in PROJECT_PACKAGES]
    env = {"py_modules": packages, "excludes": ["__pycache__", "*.pyc"]}
    forwarded = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    if forwarded:
        env["env_vars"] = forwarded
    return env


class RayExecutor:
    """Runs jobs as Ray tasks; a trial waits on the shared models it needs, passed as arguments.

    `address` (else $RAY_ADDRESS): an existing cluster (`auto`, `host:port`, `ray://host:10001`), which
    this run joins and leaves; without one, a local Ray is started here and stopped when the run ends,
    however it ends: on an exception (Ctrl-C and SIGTERM arrive as KeyboardInterrupt, see
    `bench.cli.main`) the jobs still running are cancelled and their workers killed before it is shut down.
    Before any job, resources are checked against the cluster's nodes and the cache and data root
    from a task on each node that can run a job (`check_node`). A Ray this process had joined before
    the run is used as it is, with the caller's runtime_env.
    """

    def __init__(self, address: str | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def check(self, settings: Settings) -> Settings:
        """Checked against this machine when Ray will be started here; a cluster is asked once joined (`run`)."""
        return settings if self.address else _on_this_machine(settings)

    def run(self, jobs: list[ModelJob], trials: list[Trial], settings: Settings, claims: Claims, finish) -> None:
        import ray

        started = not ray.is_initialized()
        if started:
            start_ray(ray, self.address)
        try:
            nodes = _cluster_nodes(ray)
            if settings.gpus_per_trial is None:  # a cluster's default: a GPU per job where its nodes have GPUs
                settings = replace(settings, gpus_per_trial=1.0 if any(node["GPU"] for node in nodes) else 0.0)
            cluster = f"the Ray cluster at {self.address}" if self.address else "this process's Ray"
            _check_resources(settings, nodes, cluster, ray.cluster_resources())
            _check_nodes(ray, [node for node in nodes if _fits(node, settings)], settings)
            self._run(ray, jobs, trials, settings, claims, finish)
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def _run(ray, jobs, trials, settings, claims, finish) -> None:
        resources = {"num_cpus": settings.cpus_per_trial, "num_gpus": settings.gpus_per_trial}
        model_remote = ray.remote(model_job).options(**resources)
        trial_remote = ray.remote(trial_job).options(**resources)
        model_refs, watching, given = {}, {}, {}  # given: the model jobs whose outcomes a job receives
        for job in jobs:  # dependency order: a job's dependencies were planned before it
            given_pairs = [pair for pair in job.dependencies if pair in model_refs]
            ref = model_remote.remote(job, settings, *(model_refs[pair] for pair in given_pairs))
            model_refs[job.kind, job.key], watching[ref], given[ref] = ref, {"model": (job.kind, job.key)}, given_pairs
        waiting = list(trials)  # not claimed yet: another run holds them now

        def submit_claimable() -> None:
            for trial in list(waiting):
                state = claims.take(trial.trial_id, wait=False)
                if state == "busy":
                    continue
                waiting.remove(trial)
                if state == "done":
                    finish({"trial_id": trial.trial_id, "taken": True})
                    continue
                given_pairs = [pair for pair in trial.models if pair in model_refs]
                ref = trial_remote.remote(trial, trial.trial_id, settings, *(model_refs[pair] for pair in given_pairs))
                watching[ref], given[ref] = {"trial_id": trial.trial_id}, given_pairs

        try:
            submit_claimable()
            while watching or waiting:
                ready = ray.wait(list(watching), num_returns=1, timeout=1.0)[0] if watching else []  # lets signals in
                if not watching:
                    time.sleep(1.0)
                for ref in ready:
                    finish(_collect(ray, ref, watching.pop(ref), {pair: model_refs[pair] for pair in given.pop(ref)}))
                if waiting:
                    submit_claimable()
        finally:
            for ref in watching:
                ray.cancel(ref, force=True)


def start_ray(ray, address: str | None) -> None:
    """Join the cluster at `address`, or start a local Ray with as few extra processes as Ray allows; either
    way with the project's code for the workers (`runtime_env`) and keeping this process's SIGTERM handler."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting (it would try the network)
    sigterm = signal.getsignal(signal.SIGTERM)
    common = {"runtime_env": runtime_env(), "logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:  # the cluster has its resources: asking for some here is an error in Ray
            ray.init(address=address, **common)
        else:  # "local": a new Ray even where another one's address is recorded on this machine
            ray.init(address="local", num_gpus=torch.cuda.device_count(), include_dashboard=False, **common)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if not address:
            raise
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise BenchError(f"cannot join the Ray cluster at {address}: {reason}") from None
    finally:
        # ray.init replaces SIGTERM's handler by one that calls sys.exit, and a SystemExit raised while
        # ray.wait blocks is swallowed: the run went on. Put back the caller's (bench.cli: stop cleanly).
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)


def _cluster_nodes(ray) -> list[dict]:
    """The live nodes of the Ray cluster: id, address, CPUs and GPUs."""
    return [{"id": node["NodeID"], "ip": node.get("NodeManagerAddress", "?"),
             "CPU": node.get("Resources", {}).get("CPU", 0.0), "GPU": node.get("Resources", {}).get("GPU", 0.0)}
            for node in ray.nodes() if node.get("Alive")]


def _fits(node: dict, settings: Settings) -> bool:
    return node["CPU"] >= settings.cpus_per_trial and node["GPU"] >= settings.gpus_per_trial


def check_node(settings: Settings, marker: str, token: str, data_root_present: bool) -> str | None:
    """Runs on one node: why its jobs could not use the run's model cache or data root there, or None.

    The cache must be the driver's own folder (shared storage or a URL): the driver has just written
    `marker` holding `token` into it. The data root, when the driver has one, must be readable here.
    """
    cache = ModelCache(settings.cache)
    storage, where = cache.storage, cache.root
    try:
        seen = storage.read_text(marker)
    except Exception:  # noqa: BLE001 - missing, unreadable, or a URL this node cannot reach: said below
        seen = None
    if seen != token:
        if not storage.is_dir():
            return f"the model cache {where} does not exist"
        return (f"the model cache {where} is another folder than the driver's (it lacks the file {marker} the "
                "driver has just written there)")
    probe = f".write-check-{uuid.uuid4().hex}"
    try:
        storage.write_text(probe, text="")
        storage.remove(probe)
    except Exception as err:  # noqa: BLE001 - each filesystem raises its own types
        return f"the model cache {where} is not writable ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    if data_root_present:
        root = settings.data_root
        if not os.path.isdir(root):
            return f"the data root {root} does not exist"
        if not os.access(root, os.R_OK | os.X_OK):
            return f"the data root {root} is not readable"
    return None


def _check_nodes(ray, nodes: list[dict], settings: Settings) -> None:
    """Ask each node that can run a job whether it sees the run's cache and data root; one line naming the
    nodes and the path otherwise. The driver writes a file into the cache that every node must read back."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cache = ModelCache(settings.cache)
    cache.storage.ensure_writable("model cache")
    token = uuid.uuid4().hex
    marker = f".bench-check-{token[:12]}"
    cache.storage.write_text(marker, text=token)
    remote = ray.remote(check_node)
    present = os.path.isdir(settings.data_root)
    try:
        refs = {remote.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["id"], soft=False))
                .remote(settings, marker, token, present): node for node in nodes}
        problems: dict[str, list[str]] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)  # a timeout lets signals in
            for ref in done:
                node = refs[ref]
                try:
                    problem = ray.get(ref)
                except ray.exceptions.RayError as err:  # e.g. the node cannot set up the code (runtime_env)
                    problem = "bench's code cannot run there: " + " ".join(str(err).split())[:300]
                if problem:
                    problems.setdefault(problem, []).append(f"{node['ip']} (node {node['id'][:12]})")
    finally:
        cache.storage.remove(marker)
    if problems:
        raise BenchError(" | ".join(f"{problem} on node{'s' if len(names) > 1 else ''} {', '.join(names)}"
                                    for problem, names in problems.items())
                         + "; every node must see the driver's --cache (shared storage, or a URL such as "
                         "s3://bucket/cache) and --data-root at the same path")


EXECUTORS = {"ray": RayExecutor, "local": LocalExecutor}


def _collect(ray, ref, identity: dict, given: dict) -> dict:
    """The outcome of a finished Ray job, under the driver's identity. `given`: the refs of the model jobs
    it received, by (kind, key)."""
    outcome = {**_outcome(ray, ref, identity), **identity}
    if "error" in outcome and given:  # Ray fails a job whose model's worker died: name that model
        finished = ray.wait(list(given.values()), num_returns=len(given), timeout=0)[0]
        named = _failed_dependency(_outcome(ray, model, {"model": pair}) for pair, model in given.items()
                                   if model in finished)
        outcome["error"] = named or outcome["error"]
    if "meta" in outcome:
        meta = outcome["meta"]
        log.info("%s for %s is ready (trained in %.1fs)", meta["kind"], meta["task"], meta["train_seconds"])
    return outcome


def _outcome(ray, ref, identity: dict) -> dict:
    """A job's outcome; a job Ray could not finish (its worker died) is a failure of that job."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        cause = getattr(err, "cause", None)
        return {**identity, "error": _error(cause if isinstance(cause, BaseException) else err, str(err))}


def _jobs_to_train(trials: list[Trial], jobs: dict, cache: ModelCache, retrain: bool) -> list[ModelJob]:
    """The shared models these trials need, dependencies included, in plan order, minus cached ones."""
    needed, stack = set(), [pair for trial in trials for pair in trial.models]
    while stack:
        pair = stack.pop()
        if pair not in needed:
            needed.add(pair)
            stack.extend(jobs[pair].dependencies)
    return [job for pair, job in jobs.items() if pair in needed and (retrain or not cache.has(*pair))]


def _on_this_machine(settings: Settings) -> Settings:
    """The settings with the GPU default of this machine (one per job where it has one), checked against it."""
    if settings.gpus_per_trial is None:
        settings = replace(settings, gpus_per_trial=1.0 if torch.cuda.is_available() else 0.0)
    _check_resources(settings, [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}])
    return settings


def _check_resources(settings: Settings, nodes: list[dict], cluster: str | None = None,
                     total: dict | None = None) -> None:
    """Ray would wait forever for a job that asks for more than one node has (a job never spans nodes).

    `nodes`: the CPUs and GPUs of each; `cluster`: the Ray cluster they form, in words (None: this
    machine); `total`: its resources in all (`ray.cluster_resources()`), for the message.
    """
    cpus, gpus = max(node["CPU"] for node in nodes), max(node["GPU"] for node in nodes)

    def place(count: float, unit: str) -> str:
        if cluster is None:
            return f"this machine's {count:g} {unit}"
        overall = f", {total.get(unit[:-1], 0):g} in all" if total else ""
        return f"the largest node of {cluster} ({count:g} {unit}{overall}; a job runs on one node)"

    if not 0 < settings.cpus_per_trial <= cpus:
        raise BenchError(f"--cpus-per-trial {settings.cpus_per_trial:g} does not fit {place(cpus, 'CPUs')}")
    if settings.gpus_per_trial > 0 and gpus == 0:
        where = "none is visible" if cluster is None else f"no node of {cluster} has one"
        raise BenchError(f"--gpus-per-trial {settings.gpus_per_trial:g} asks for a GPU but {where}; "
                         "use --gpus-per-trial 0")
    if settings.gpus_per_trial > max(gpus, 1) or settings.gpus_per_trial < 0:
        raise BenchError(f"--gpus-per-trial {settings.gpus_per_trial:g} does not fit {place(gpus, 'GPUs')}")
    if not any(_fits(node, settings) for node in nodes):
        raise BenchError(f"no node of {cluster or 'this machine'} has both {settings.cpus_per_trial:g} CPUs and "
                         f"{settings.gpus_per_trial:g} GPUs for one job (--cpus-per-trial, --gpus-per-trial)")


def protocol_tasks(protocol: str, datasets=None, partitions=None, aux: str | None = None) -> list[Task]:
    """The protocol's tasks, with the auxiliary set `aux` instead of its own when given ("none": without one)."""
    tasks = PROTOCOLS.get(protocol).tasks(datasets, partitions)
    if aux is None:
        return tasks
    return [task.with_aux(None if aux.strip().lower() == "none" else aux) for task in tasks]


def executor_for(executor: str, address: str | None, settings: Settings):
    """The executor and the settings it runs with: paths resolved, per-job resources filled in and checked."""
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    runner = EXECUTORS[executor](address)
    settings = settings.resolved()
    if settings.cpus_per_trial is None:
        settings = replace(settings, cpus_per_trial=1.0 if executor == "ray" else float(os.cpu_count() or 1))
    return runner, runner.check(settings)


def train_models(trials: list[Trial], jobs: dict, settings: Settings, runner) -> list[dict]:
    """Train the shared models `trials` need and the cache lacks, on `runner`; the outcomes of those that failed."""
    failed = []
    todo = _jobs_to_train(trials, jobs, ModelCache(settings.cache), settings.retrain)
    runner.run(todo, [], settings, Claims(ResultStore(settings.out), False),
               lambda outcome: failed.append(outcome) if "error" in outcome else None)
    return failed


def run(protocol: str, methods: list[MethodSpec], *, datasets=None, partitions=None, seeds=(0,), scale="demo",
        overrides: tuple[Override, ...] = (), executor="ray", address=None, force=False, skip_missing=False,
        settings: Settings, only=None, annotate=None, aux: str | None = None) -> dict:
    """Run every pending trial; return counts (and OOD sets skipped for missing data, by task, and the
    failed records of the trials that failed, under "failed"). `address`: an existing Ray cluster
    (executor "ray"; default $RAY_ADDRESS, else a local Ray started here). `only(trial)`: run just the
    trials it accepts; `annotate(trial)`: more fields for a trial's record (neither changes trial ids). `aux`:
    the auxiliary outlier set instead of the protocol's (a dataset name, or "none").

    Raises BenchError for anything the user can fix before a job starts; a job that fails is a
    failed record instead, and the other jobs go on.
    """
    runner, settings = executor_for(executor, address, settings)
    tasks = protocol_tasks(protocol, datasets, partitions, aux)
    trials, jobs = plan(tasks, methods, list(seeds), scale, overrides)
    trials = [trial for trial in trials if only is None or only(trial)]
    store = ResultStore(settings.out)
    store.ensure_writable()
    pending = [t for t in trials if force or not store.has(t.trial_id)]
    total, skipped = len(trials), len(trials) - len(pending)
    if skipped:
        log.info("%d of %d trials already have results in %s (use --force to redo them)", skipped, len(trials), store.trials)
    if not pending:
        return {"trials": len(trials), "ran": 0, "skipped": skipped}
    pending_tasks = list({t.task.name: t.task for t in pending}.values())
    ready = check_data(pending_tasks, settings, skip_missing)
    skipped_sets = {task.name: list(task.skipped_ood_sets) for task in ready if task.skipped_ood_sets}
    if skipped_sets:  # fewer OOD sets make other trials: plan the pending ones again
        wanted = {(t.task.name, t.seed, t.method) for t in pending}
        trials, jobs = plan(ready, methods, list(seeds), scale, overrides)
        pending = [t for t in trials if (t.task.name, t.seed, t.method) in wanted and (only is None or only(t))
                   and (force or not store.has(t.trial_id))]
        skipped = total - len(pending)
    todo = _jobs_to_train(pending, jobs, ModelCache(settings.cache), settings.retrain)
    log.info("%d trials to run, %d shared models to train, executor %s", len(pending), len(todo), executor)
    by_id = {trial.trial_id: trial for trial in pending}
    done, taken, failed = 0, 0, []
    claims = Claims(store, force)

    def finish(outcome: dict) -> None:
        nonlocal done, taken
        if "model" in outcome:
            if "error" in outcome:
                error = outcome["error"]
                log.error("%s (%s) failed to train: %s: %s", *outcome["model"], error["type"], error["message"])
            return
        trial = by_id[outcome["trial_id"]]
        done += 1
        try:
            if "taken" in outcome:
                taken += 1
                log.info("[%d/%d] %s  finished by another run meanwhile", done, len(pending), trial.name)
            elif "error" in outcome:
                failed.append(_record_failure(store, trial, outcome["error"], settings, outcome.get("node", {})))
                log.error("[%d/%d] %s  FAILED  %s: %s", done, len(pending), trial.name, outcome["error"]["type"],
                          outcome["error"]["message"].splitlines()[0])
            else:
                record = {**outcome["record"], **(annotate(trial) if annotate else {})}
                store.write(record, outcome.get("samples"))  # the driver is the one writer of records
                timing = record["timing"]["summary"]
                log.info("[%d/%d] %s  AUROC %.4f  (%.1fs)", done, len(pending), trial.name, record["metrics"]["auroc"],
                         timing["fit_s"] + timing["score_s"])
        finally:
            claims.release(outcome["trial_id"])

    def finish_and_count(outcome: dict) -> None:
        finish(outcome)
        bar.update(1)

    try:
        with progress.counter(len(todo) + len(pending), "models and trials") as bar:
            runner.run(todo, pending, settings, claims, finish_and_count)
    finally:
        claims.release_all()
    summary = {"trials": total, "ran": len(pending) - taken, "skipped": skipped + taken, "trained": len(todo)}
    if skipped_sets:
        summary["skipped_ood_sets"] = skipped_sets
    if failed:
        summary["failed"] = failed
    return summary


def _record_failure(store: ResultStore, trial: Trial, error: dict, settings: Settings, node: dict) -> dict:
    """Store a failed trial apart from the results (tables never read it; the next run retries it).
    `node`: the provenance of the node where it failed, when its job said."""
    task = trial.task
    record = {
        "trial_id": trial.trial_id, "name": trial.name, "task": task.name, "protocol": task.protocol,
        "dataset": task.dataset, "partition": task.partition, "seed": trial.seed, "method": trial.method.label,
        "scale": trial.recipe.scale, "error": error,
        "provenance": {**settings.provenance, **node, "failed": provenance.now()},
    }
    record["path"] = str(store.write_failure(record))
    return record
