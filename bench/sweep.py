"""Hyperparameter sweeps on Ray Tune, chosen on validation data, then run once on the test sets.

    bench sweep --method odin --grid "temperature=1,10,100,1000;epsilon=0,0.0014,0.0028" --protocol setting1
    bench sweep --method knn --random "k=randint(1,200)" --samples 20 --protocol far_fmnist

Every candidate configuration is fitted afresh and scored on each task's validation data only: the
ID validation split held out from ID training against the protocol's validation OOD sets
(`Task.id_val`, `Task.ood_vals`, disjoint from the test OOD sets; OpenOOD v1.5's APS). A candidate
is run on a view of the task whose only test sets are those validation sets (`validation_view`), so
it cannot reach a test set even by asking the task. The best candidate of each (task, seed) cell by
the objective is then run once on the test sets by `bench.runner.run`, stored like any trial under
its own label, and its record says how it was chosen (`selection`).

Candidates share the trained models and, for post-hoc scores, the network's outputs on each split
(`bench.features`): the backbone runs once per split, not once per candidate. Shared models are
trained before the search as `bench run` trains them (same keys, same cache). The search space is
seeded (`--search-seed`), Tune keeps its results under `<out>/sweeps/<sweep id>/`, and the same
command resumes an interrupted sweep there; a summary of every candidate goes to
`<out>/sweeps/<sweep id>.json`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.method import MethodSpec, literal_value, split_options
from bench.protocol import Task

log = logging.getLogger(__name__)

OBJECTIVES = {"auroc": "max", "aupr_in": "max", "aupr_out": "max", "fpr95": "min", "fpr95_oodpos": "min"}
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
REPORTED = "validation/"  # what a candidate reports to Tune, apart from Tune's own fields
_DISTRIBUTION = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class SearchSpace:
    """Options to search: `grid` (every value of every option, crossed) and `random` (a distribution per
    option, `samples` draws of them, crossed with the grid), as the user wrote them."""

    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    random: tuple[tuple[str, str, tuple[Any, ...]], ...] = ()  # (option, distribution, its arguments)
    samples: int = 1

    @property
    def options(self) -> list[str]:
        return [name for name, _ in self.grid] + [name for name, _, _ in self.random]

    def describe(self) -> dict:
        return {"grid": {name: list(values) for name, values in self.grid},
                "random": {name: [kind, list(args)] for name, kind, args in self.random}, "samples": self.samples}

    def tune_space(self) -> dict:
        from ray import tune

        space = {name: tune.grid_search(list(values)) for name, values in self.grid}
        for name, kind, args in self.random:
            space[name] = tune.choice(list(args)) if kind == "choice" else getattr(tune, kind)(*args)
        return space

    def size(self) -> int:
        return math.prod(len(values) for _, values in self.grid) * self.samples


def _assignments(text: str | None, flag: str) -> list[tuple[str, str]]:
    """`a=1,2;b=3` -> [('a', '1,2'), ('b', '3')]."""
    pairs = []
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, equals, values = part.partition("=")
        if not equals or not name.strip() or not values.strip():
            raise BenchError(f"{flag} {text!r}: write option=values separated by ';', e.g. "
                             "\"temperature=1,10,100;epsilon=0,0.0014\"")
        pairs.append((name.strip(), values.strip()))
    return pairs


def parse_space(method: MethodSpec, grid: str | None, random: str | None, samples: int | None) -> SearchSpace:
    """The search space of `--grid`, `--random` and `--samples`, every value checked as a method option now."""
    grid_options = tuple((name, tuple(literal_value(v.strip()) for v in split_options(values)))
                         for name, values in _assignments(grid, "--grid"))
    random_options = []
    for name, text in _assignments(random, "--random"):
        match = _DISTRIBUTION.match(text)
        if not match or match.group(1) not in DISTRIBUTIONS:
            raise BenchError(f"--random {name}={text}: use one of {', '.join(f'{d}(...)' for d in DISTRIBUTIONS)}, "
                             "e.g. k=randint(1,200) or temperature=loguniform(1,1000)")
        kind, args = match.group(1), tuple(literal_value(v.strip()) for v in split_options(match.group(2)))
        if kind != "choice" and (len(args) != 2 or not all(isinstance(a, (int, float)) for a in args)
                                 or not args[0] < args[1] or (kind == "loguniform" and args[0] <= 0)):
            raise BenchError(f"--random {name}={text}: {kind} takes two numbers low < high"
                             f"{' (low > 0)' if kind == 'loguniform' else ''}")
        if not args:
            raise BenchError(f"--random {name}={text}: give the values to choose from")
        random_options.append((name, kind, args))
    if samples is not None and not random_options:
        raise BenchError("--samples counts random draws; give --random too")
    space = SearchSpace(grid_options, tuple(random_options), samples or 1)
    names = space.options
    if not names:
        raise BenchError("nothing to search: give --grid and/or --random")
    repeated = sorted({name for name in names if names.count(name) > 1})
    fixed = sorted(set(names) & {key for key, _ in method.overrides})
    if repeated or fixed:
        raise BenchError(f"option {', '.join(repeated or fixed)} is "
                         f"{'searched twice' if repeated else 'both fixed in --method and searched'}")
    for name, values in space.grid:  # each value alone, so the error names it
        for value in values:
            with_options(method, {name: value}).build()
    for name, kind, args in space.random:
        for value in args:  # choice's values, or a range's ends
            with_options(method, {name: int(value) if kind == "randint" else value}).build()
    return space


def with_options(method: MethodSpec, options: dict[str, Any]) -> MethodSpec:
    """`method` with searched options added after its own (a float Tune drew becomes a plain float)."""
    plain = {name: value.item() if hasattr(value, "item") else value for name, value in options.items()}
    return replace(method, overrides=(*method.overrides, *plain.items()))


def validation_view(task: Task) -> Task:
    """The task as a candidate sees it: its validation data in place of its test sets."""
    if task.id_val is None or not task.ood_vals:
        raise BenchError(f"task {task.name} has no validation data to choose on (an ID validation split and "
                         "validation OOD sets); its protocol must name them")
    return replace(task, id_test=task.id_val, ood_tests=dict(task.ood_vals), ood_vals={}, skipped_ood_sets=())


@dataclass(frozen=True)
class Cell:
    """One (task, seed) whose candidates compete; the best is chosen for it alone."""

    task: Task
    seed: int
    scale: str
    overrides: tuple

    @property
    def name(self) -> str:
        return f"{self.task.name}/seed{self.seed}"


def validation_metrics(method: MethodSpec, cell: Cell, settings) -> dict:
    """Fit `method` for the cell and score it on the cell's validation data: {metric: value, 'ood_sets': ...}.

    Shared models come from the cache (trained here under the cache's lock when missing)."""
    from bench.runner import plan, run_trial, train_shared_model

    (trial,), jobs = plan([validation_view(cell.task)], [method], [cell.seed], cell.scale, cell.overrides)
    for job in jobs.values():  # dependency order
        train_shared_model(job, settings)
    record, _ = run_trial(trial, settings, trial_id="validation")
    return {**record["metrics"], "ood_sets": record["ood_sets"], "fit_s": record["timing"]["summary"]["fit_s"],
            "score_s": record["timing"]["summary"]["score_s"]}


def _candidate(config: dict, *, method: MethodSpec, cells: list[Cell], settings) -> None:
    """A Tune trial: one configuration on one cell's validation data."""
    from ray import tune

    options = {name: value for name, value in config.items() if name != "cell"}
    metrics = validation_metrics(with_options(method, options), cells[config["cell"]], settings)
    per_set = metrics.pop("ood_sets")
    flat = {**metrics, **{f"{name}/{metric}": value for name, values in per_set.items() for metric, value in values.items()}}
    tune.report({REPORTED + name: value for name, value in flat.items()})


def _progress(total: int, objective: str, cells: list[Cell], method: MethodSpec):
    """A Tune callback that logs each finished or failed candidate, as `bench run` logs trials."""
    from ray import tune

    class Progress(tune.Callback):
        done = 0

        def _name(self, trial) -> str:
            options = {name: value for name, value in trial.config.items() if name != "cell"}
            return f"{cells[trial.config['cell']].name}/{with_options(method, options).label}"

        def on_trial_complete(self, iteration, trials, trial, **info):
            Progress.done += 1
            value = (trial.last_result or {}).get(REPORTED + objective, float("nan"))
            log.info("[%d/%d] %s  validation %s %.4f", Progress.done, total, self._name(trial), objective, value)

        def on_trial_error(self, iteration, trials, trial, **info):
            Progress.done += 1
            log.error("[%d/%d] %s  FAILED (see %s)", Progress.done, total, self._name(trial), trial.path)

    return Progress()


def _best(rows: list[dict], objective: str) -> dict | None:
    """The best finished candidate by the objective; ties go to the first in the search's order."""
    finished = [row for row in rows if row.get("metrics") and math.isfinite(row["metrics"].get(objective, math.nan))]
    if not finished:
        return None
    sign = -1 if OBJECTIVES[objective] == "max" else 1
    return min(finished, key=lambda row: (sign * row["metrics"][objective], row["order"]))


def sweep(protocol: str, method: MethodSpec, space: SearchSpace, *, objective: str = "auroc", datasets=None,
          partitions=None, seeds=(0,), scale: str = "demo", overrides=(), address=None, search_seed: int = 0,
          aux: str | None = None, settings) -> dict:
    """Search `space` for `method` on every (task, seed) cell's validation data, then run each cell's best
    configuration on its test sets (`aux`: another auxiliary set, as `bench run --aux`). Returns the summary also
    written to `<out>/sweeps/<sweep id>.json`."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older reporter honours verbose=0: bench logs instead
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV files per candidate
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from bench.runner import check_data, executor_for, plan, protocol_tasks, run, start_ray, train_models
    from bench.store import ResultStore, Storage, content_key

    if objective not in OBJECTIVES:
        raise BenchError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    runner, settings = executor_for("ray", address, settings)
    tasks = protocol_tasks(protocol, datasets, partitions, aux)
    views = [validation_view(task) for task in tasks]
    cells = [Cell(task, seed, scale, tuple(overrides)) for task in tasks for seed in seeds]
    base_trials, jobs = plan(views, [method], list(seeds), scale, tuple(overrides))
    sweep_id = content_key({"method": method.label, "space": space.describe(), "objective": objective,
                            "search_seed": search_seed, "cells": [trial.trial_id for trial in base_trials]})
    store = ResultStore(settings.out)
    store.ensure_writable()
    sweeps = Storage(settings.out)
    experiment = sweeps.path("sweeps", sweep_id)
    log.info("sweep %s: %s over %d configurations x %d cells, objective %s (%s) on validation data",
             sweep_id, method.label, space.size(), len(cells), objective, OBJECTIVES[objective])
    check_data(views, settings)  # the validation data only: the search never loads a test set
    started = not ray.is_initialized()
    if started:
        start_ray(ray, runner.address)
    try:
        failed = train_models(base_trials, jobs, settings, runner)
        if failed:
            raise BenchError(f"shared model {failed[0]['model'][0]} failed to train: {failed[0]['error']['message']}")
        trainable = tune.with_resources(tune.with_parameters(_candidate, method=method, cells=cells, settings=settings),
                                        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
        if tune.Tuner.can_restore(str(experiment)):
            log.info("resuming the sweep's search in %s", experiment)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"cell": tune.grid_search(list(range(len(cells)))), **space.tune_space()},
                tune_config=tune.TuneConfig(num_samples=space.samples,
                                            search_alg=BasicVariantGenerator(random_state=search_seed)),
                run_config=tune.RunConfig(name=sweep_id, storage_path=str(sweeps.path("sweeps")), verbose=0,
                                          callbacks=[_progress(space.size() * len(cells), objective, cells, method)]),
            )
        summary, chosen = _choose(_candidates(tuner.fit(), method, space), cells, method, objective)
        summary.update(sweep_id=sweep_id, space=space.describe(), search_seed=search_seed, search=str(experiment))
        if chosen:
            by_cell = {(cell["task"], cell["seed"]): cell for cell in summary["cells"]}
            outcome = run(protocol, list({spec.label: spec for spec in chosen.values()}.values()), datasets=datasets,
                          partitions=partitions, seeds=seeds, scale=scale, overrides=overrides, executor="ray",
                          address=address, settings=settings, aux=aux,
                          only=lambda trial: getattr(chosen.get((trial.task.name, trial.seed)), "label", None)
                          == trial.method.label,
                          annotate=lambda trial: {"selection": _selection(summary, by_cell[trial.task.name, trial.seed])})
            summary["test_run"] = {key: value for key, value in outcome.items() if key != "failed"}
            summary["test_failed"] = [record["name"] for record in outcome.get("failed", [])]
    finally:
        if started:
            ray.shutdown()
    sweeps.write_text("sweeps", f"{sweep_id}.json", text=json.dumps(summary, indent=1, default=str))
    return summary


def _candidates(results, method: MethodSpec, space: SearchSpace) -> list[dict]:
    """Tune's results as rows: cell, options (in the order the user gave them), label, validation metrics (None
    when it failed), error, and order (Tune's trial index: the order the search generated them in)."""
    rows = []
    for order, result in enumerate(sorted(results, key=lambda result: Path(result.path).name)):
        options = {name: result.config[name] for name in space.options}
        metrics = None
        if result.error is None and result.metrics:
            metrics = {name[len(REPORTED):]: value for name, value in result.metrics.items() if name.startswith(REPORTED)}
        rows.append({"cell": result.config["cell"], "options": options, "label": with_options(method, options).label,
                     "metrics": metrics, "error": None if result.error is None else str(result.error).strip()[-500:],
                     "order": order})
    return rows


def _choose(rows: list[dict], cells: list[Cell], method: MethodSpec, objective: str):
    """(summary of every cell's candidates and choice, {(task name, seed): the chosen configuration})."""
    summary = {"method": method.label, "objective": objective, "mode": OBJECTIVES[objective], "cells": []}
    chosen: dict[tuple[str, int], MethodSpec] = {}
    for index, cell in enumerate(cells):
        mine = [row for row in rows if row["cell"] == index]
        best = _best(mine, objective)
        if best is not None:
            chosen[cell.task.name, cell.seed] = with_options(method, best["options"])
        summary["cells"].append({"task": cell.task.name, "seed": cell.seed, "chosen": best and best["label"],
                                 "validation": best and best["metrics"], "failed": sum(1 for row in mine if row["error"]),
                                 "candidates": [{key: row[key] for key in ("label", "metrics", "error")} for row in mine]})
    return summary, chosen


def _selection(summary: dict, cell: dict) -> dict:
    """What a chosen trial's record says about how it was chosen."""
    return {"sweep": summary["sweep_id"], "objective": summary["objective"], "mode": summary["mode"],
            "validation": {key: cell["validation"][key] for key in (*OBJECTIVES, "accuracy") if key in cell["validation"]},
            "candidates": len(cell["candidates"]), "space": summary["space"], "summary": f"sweeps/{summary['sweep_id']}.json"}
