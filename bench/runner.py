"""Expand (protocol x datasets x partitions x seeds x methods) into trials and run them.

Shared models are jobs of their own: each distinct (kind, key) is trained exactly once,
before the trials that need it, on Ray (fractional CPUs/GPUs per job) or in-process.
Each trial writes its record the moment it finishes, so a killed run loses nothing done.
Nothing here knows any method, dataset or protocol by name.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bench import provenance
from bench.data import DATASETS, load_split
from bench.errors import BenchError
from bench.method import FitContext, MethodSpec
from bench.protocol import PROTOCOLS, DataRef, Task
from bench.recipes import Recipe, describe_part, recipe_for
from bench.shared import SHARED_MODELS
from bench.scoring import load_ref, score_task
from bench.training import TrainInputs
from bench.store import ModelCache, ResultStore, code_hash, content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Where things live and how much hardware a job gets; the same for every job of a run."""

    out: str
    cache: str | None = None
    data_root: str | None = None
    cpus_per_trial: float | None = None  # None: 1 per Ray job, every core in-process
    gpus_per_trial: float | None = None  # None: 1 per job when a GPU is visible, else 0
    retrain: bool = False
    provenance: dict = field(default_factory=dict)

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

    @property
    def trial_id(self) -> str:
        """Everything that determines the trial's numbers: data, seed, method and its options, the code
        that fits and scores it, its own recipe part, the data limits and the keys of its models."""
        method = self.method.build()
        return content_key({
            "task": self.task.name,
            "data": [ref.describe() for ref in self.task.data_refs()],
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


def task_recipe(task: Task, scale: str) -> Recipe:
    source = DATASETS.get(task.id_train.dataset)
    return recipe_for(scale, task.image_shape, augment=source.train_augment)


def plan(tasks: list[Task], methods: list[MethodSpec], seeds: list[int], scale: str) -> tuple[list[Trial], dict]:
    """Trials plus the shared-model jobs they need, keyed by (kind, key), in dependency order."""
    jobs: dict[tuple[str, str], ModelJob] = {}

    def job_for(kind: str, task: Task, recipe: Recipe, seed: int) -> tuple[str, str]:
        spec = SHARED_MODELS.get(kind)
        deps = tuple(job_for(dep, task, recipe, seed) for dep in spec.requires)
        key = spec.key(task, recipe, seed, dict(deps))
        jobs.setdefault((kind, key), ModelJob(kind, key, task, recipe, seed, deps))
        return kind, key

    trials = []
    for task in tasks:
        recipe = task_recipe(task, scale)
        for seed in seeds:
            for method in methods:
                models = tuple(job_for(kind, task, recipe, seed) for kind in method.requires())
                trials.append(Trial(task, seed, method, recipe, models))
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

    `_dependencies` are only there so that Ray starts this job after the ones it needs.
    """
    cache = ModelCache(settings.cache)
    if cache.has(job.kind, job.key) and not settings.retrain:
        return cache.meta(job.kind, job.key)
    torch.set_num_threads(settings.threads())
    device = settings.device()
    generator = seed_everything(job.seed)
    spec = SHARED_MODELS.get(job.kind)
    train = load_ref(job.task.id_train, settings, job.recipe.train_limit, job.seed)
    dependencies = {kind: build_cached(kind, key, job.task, job.recipe, settings) for kind, key in job.dependencies}
    log.info("training %s for %s (seed %d, %d images) on %s", job.kind, job.task.name, job.seed, len(train), device)
    start = time.perf_counter()
    model = spec.build(job.task, job.recipe).to(device)
    model = spec.train(model, TrainInputs(job.task, train, job.recipe, device, generator, dependencies, job.seed,
                                          settings.data_root))
    seconds = time.perf_counter() - start
    meta = {
        "kind": job.kind, "key": job.key, "task": job.task.name, "seed": job.seed,
        "recipe": {**job.recipe.describe(), "part": describe_part(spec.recipe_part(job.recipe))},
        "train_seconds": seconds, "device": str(device),
        "dependencies": dict(job.dependencies), "train_images": len(train),
        "provenance": settings.provenance,
    }
    cache.save(job.kind, job.key, {k: v.cpu() for k, v in model.state_dict().items()}, meta)
    log.info("trained %s for %s in %.1fs", job.kind, job.task.name, seconds)
    return meta


def _shared_seconds(pairs, cache: ModelCache) -> dict[str, dict]:
    """Training time of every shared model a trial used, dependencies included."""
    charged: dict[str, dict] = {}
    pending = list(pairs)
    while pending:
        kind, key = pending.pop()
        meta = cache.meta(kind, key)
        charged[kind] = {"key": key, "train_seconds": meta["train_seconds"]}
        pending.extend(meta.get("dependencies", {}).items())
    return charged


def run_trial(trial: Trial, settings: Settings, *_dependencies) -> dict:
    """Fit one method on one task and seed, score the test sets, write the record."""
    torch.set_num_threads(settings.threads())
    device = settings.device()
    generator = seed_everything(trial.seed)
    task, recipe = trial.task, trial.recipe
    train = load_ref(task.id_train, settings, recipe.train_limit, trial.seed)
    models = {kind: build_cached(kind, key, task, recipe, settings) for kind, key in trial.models}
    method = trial.method.build()

    start = time.perf_counter()
    method.fit(FitContext(task, train, models, recipe, trial.seed, device, generator))
    fit_seconds = time.perf_counter() - start
    scores = score_task(method, task, settings, recipe.test_limit, trial.seed)

    shared = _shared_seconds(trial.models, ModelCache(settings.cache))
    shared_seconds = sum(item["train_seconds"] for item in shared.values())
    record = {
        "trial_id": trial.trial_id,
        "protocol": task.protocol,
        "dataset": task.dataset,
        "partition": task.partition,
        "seed": trial.seed,
        "method": trial.method.label,
        "method_name": trial.method.name,
        "method_params": method.params(),
        "scale": recipe.scale,
        "recipe": {**recipe.describe(), "method": describe_part(method.recipe_part(recipe))},
        "data": {"id_train": len(train), **scores.sizes},
        "data_key": content_key([ref.describe() for ref in task.data_refs()]),
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
        "provenance": {**settings.provenance, "finished": provenance.now()},
    }
    ResultStore(settings.out).write(record)
    return {"name": trial.name, "auroc": scores.metrics["auroc"], "seconds": fit_seconds + scores.seconds}


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


class LocalExecutor:
    """Runs jobs one after another in this process: for debugging and for tests."""

    def run(self, jobs: list[ModelJob], trials: list[Trial], settings: Settings, report) -> None:
        for job in jobs:
            train_shared_model(job, settings)
        for trial in trials:
            report(run_trial(trial, settings))


class RayExecutor:
    """Runs jobs as Ray tasks; a trial waits on the shared models it needs, passed as arguments."""

    def run(self, jobs: list[ModelJob], trials: list[Trial], settings: Settings, report) -> None:
        import ray

        if not ray.is_initialized():
            project_root = str(Path(__file__).resolve().parent.parent)
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")]))
            ray.init(
                num_gpus=torch.cuda.device_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        resources = {"num_cpus": settings.cpus_per_trial, "num_gpus": settings.gpus_per_trial}
        train_remote = ray.remote(train_shared_model).options(**resources)
        trial_remote = ray.remote(run_trial).options(**resources)
        model_refs, watching = {}, {}
        for job in jobs:  # dependency order: a job's dependencies were planned before it
            deps = [model_refs[pair] for pair in job.dependencies if pair in model_refs]
            model_refs[job.kind, job.key] = ref = train_remote.remote(job, settings, *deps)
            watching[ref] = "model"
        for trial in trials:
            deps = [model_refs[pair] for pair in trial.models if pair in model_refs]
            watching[trial_remote.remote(trial, settings, *deps)] = "trial"
        try:
            while watching:
                (ref,), _ = ray.wait(list(watching), num_returns=1)
                kind = watching.pop(ref)
                result = _unwrap(ray, ref)
                if kind == "trial":
                    report(result)
                else:
                    log.info("trained %s for %s in %.1fs", result["kind"], result["task"], result["train_seconds"])
        finally:
            for ref in watching:
                ray.cancel(ref, force=True)


EXECUTORS = {"ray": RayExecutor, "local": LocalExecutor}


def _unwrap(ray, ref):
    """A BenchError raised in a worker reaches the user as itself, not as a Ray traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, BenchError):
            raise BenchError(str(err.cause)) from None
        raise


def _jobs_to_train(trials: list[Trial], jobs: dict, cache: ModelCache, retrain: bool) -> list[ModelJob]:
    """The shared models these trials need, dependencies included, in plan order, minus cached ones."""
    needed, stack = set(), [pair for trial in trials for pair in trial.models]
    while stack:
        pair = stack.pop()
        if pair not in needed:
            needed.add(pair)
            stack.extend(jobs[pair].dependencies)
    return [job for pair, job in jobs.items() if pair in needed and (retrain or not cache.has(*pair))]


def _check_resources(settings: Settings) -> None:
    """Ray would wait forever for a job that asks for more than the machine has."""
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    if not 0 < settings.cpus_per_trial <= cpus:
        raise BenchError(f"--cpus-per-trial {settings.cpus_per_trial:g} does not fit this machine's {cpus} CPUs")
    if settings.gpus_per_trial > 0 and gpus == 0:
        raise BenchError(f"--gpus-per-trial {settings.gpus_per_trial:g} asks for a GPU but none is visible; "
                         "use --gpus-per-trial 0")
    if settings.gpus_per_trial > max(gpus, 1) or settings.gpus_per_trial < 0:
        raise BenchError(f"--gpus-per-trial {settings.gpus_per_trial:g} does not fit this machine's {gpus} GPUs")


def run(protocol: str, methods: list[MethodSpec], *, datasets=None, partitions=None, seeds=(0,), scale="small",
        executor="ray", force=False, skip_missing=False, settings: Settings) -> dict:
    """Run every pending trial; return counts (and OOD sets skipped for missing data, by task).

    Raises BenchError for anything the user can fix.
    """
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if settings.cpus_per_trial is None:
        settings = replace(settings, cpus_per_trial=1.0 if executor == "ray" else float(os.cpu_count() or 1))
    if settings.gpus_per_trial is None:
        settings = replace(settings, gpus_per_trial=1.0 if torch.cuda.is_available() else 0.0)
    _check_resources(settings)
    tasks = PROTOCOLS.get(protocol).tasks(datasets, partitions)
    trials, jobs = plan(tasks, methods, list(seeds), scale)
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
        trials, jobs = plan(ready, methods, list(seeds), scale)
        pending = [t for t in trials if (t.task.name, t.seed, t.method) in wanted
                   and (force or not store.has(t.trial_id))]
        skipped = total - len(pending)
    todo = _jobs_to_train(pending, jobs, ModelCache(settings.cache), settings.retrain)
    log.info("%d trials to run, %d shared models to train, executor %s", len(pending), len(todo), executor)
    done = 0

    def report(result: dict) -> None:
        nonlocal done
        done += 1
        log.info("[%d/%d] %s  AUROC %.4f  (%.1fs)", done, len(pending), result["name"], result["auroc"], result["seconds"])

    EXECUTORS[executor]().run(todo, pending, settings, report)
    summary = {"trials": total, "ran": len(pending), "skipped": skipped, "trained": len(todo)}
    return {**summary, "skipped_ood_sets": skipped_sets} if skipped_sets else summary
