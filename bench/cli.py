"""The `bench` command: run, sweep, evaluate, samples, list, data, table, compare, leaderboard.

Every user-fixable problem is a BenchError, printed as one line with exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import statistics
import sys
import threading
from pathlib import Path

from bench.errors import BenchError

DEFAULT_OUT = "results"
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
RECIPE_HELP = ("override recipe fields, e.g. classifier.epochs=30,cvae.width=32, or a TOML file of them; repeatable, "
               "later wins (`bench list recipes` shows the tables and fields)")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are BenchErrors, so a bad flag is one line with exit status 2 like every other error."""

    def error(self, message: str):
        raise BenchError(f"{message} (see `{self.prog} --help`)")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = None
    if seed is None or not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be an integer from 0 to {MAX_SEED} (got {text!r})")
    return seed


def _seeds(text: str) -> list[int]:
    seeds = [_seed(item) for item in _csv(text)]
    if not seeds:
        raise argparse.ArgumentTypeError(f"give at least one seed, e.g. 0,1,2 (got {text!r})")
    return seeds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})")
    return value


def _output_file(path: str) -> Path:
    """`--output`: a file whose folder can be written, checked before anything is computed."""
    from bench.store import ensure_writable

    output = Path(path).expanduser()
    if output.is_dir():
        raise BenchError(f"--output {path} is a folder; name a file in it, e.g. {output / 'out.txt'}")
    folder = output.resolve().parent
    existing = next(place for place in (folder, *folder.parents) if place.exists())
    if not existing.is_dir():
        raise BenchError(f"cannot write --output {path}: {existing} is a file, not a folder; choose another path")
    ensure_writable(folder, "--output file")
    return output


def _overrides(args) -> tuple:
    """`--recipe` flags and files, checked against the recipe tables (nothing to load without them)."""
    if not getattr(args, "recipe", None):
        return ()
    from bench.recipes import parse_overrides

    return parse_overrides(args.recipe)


def cmd_run(args) -> int:
    from bench import provenance
    from bench.method import parse_methods
    from bench.reports import for_recipe, table1
    from bench.runner import Settings, protocol_tasks, run
    from bench.store import ResultStore

    methods = parse_methods(args.methods)
    overrides = _overrides(args)
    settings = Settings(
        out=args.out,
        cache=args.cache,
        data_root=args.data_root,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        retrain=args.retrain,
        provenance=provenance.driver(sys.argv),  # each record adds the provenance of the node that ran it
    ).resolved()  # paths as this process sees them, for every job wherever it runs
    summary = run(
        args.protocol, methods, datasets=args.datasets, partitions=args.partitions, seeds=args.seeds,
        scale=args.scale, overrides=overrides, executor=args.executor, address=args.address, force=args.force,
        skip_missing=args.skip_missing, settings=settings, aux=args.aux,
    )
    failed = summary.pop("failed", [])
    logging.getLogger("bench").info("done: %s", {**summary, "failed": len(failed)} if failed else summary)
    frame = for_recipe(ResultStore(settings.out).frame(), overrides)
    if not frame.empty:
        offered = {task.extra_train.dataset for task in protocol_tasks(args.protocol, args.datasets, args.partitions,
                                                                        args.aux) if task.extra_train}
        frame = frame[(frame["protocol"] == args.protocol) & (frame["scale"] == args.scale)
                      & (frame["aux"].isna() | frame["aux"].isin(offered))]  # this run's auxiliary set, not others
    if not frame.empty:  # this run's cells only: other seeds or partitions in the store are `bench report`'s
        frame = frame[frame["seed"].isin(args.seeds)]
        if args.datasets:
            frame = frame[frame["dataset"].isin(args.datasets)]
        if args.partitions:
            frame = frame[frame["partition"].isin(args.partitions)]
    if not frame.empty or not failed:  # every trial failed: the failures below are the whole story
        print(table1(frame, methods=[m.label for m in methods], where=args.out))
    for task, sets in summary.get("skipped_ood_sets", {}).items():
        print(f"skipped (data missing): {task}: {', '.join(sets)}")
    if not failed:
        return 0
    print(f"bench: {len(failed)} of {summary['ran']} trials failed (records with tracebacks in "
          f"{failed[0]['path'].rsplit('/', 1)[0]}; the same command runs them again):", file=sys.stderr)
    for record in failed:
        error = record["error"]
        message = " ".join(error["message"].split())
        print(f"  {record['name']}  {error['type']}: {message[:500]}", file=sys.stderr)
    return 1


def cmd_sweep(args) -> int:
    from tabulate import tabulate

    from bench import provenance
    from bench.method import parse_methods
    from bench.runner import Settings
    from bench.store import ResultStore
    from bench.sweep import parse_space, sweep

    methods = parse_methods(args.method)
    if len(methods) != 1:
        raise BenchError(f"--method takes one method to tune (got {len(methods)}: {args.method}); sweep them one by one")
    space = parse_space(methods[0], args.grid, args.random, args.samples)
    overrides = _overrides(args)
    settings = Settings(out=args.out, cache=args.cache, data_root=args.data_root, cpus_per_trial=args.cpus_per_trial,
                        gpus_per_trial=args.gpus_per_trial, provenance=provenance.driver(sys.argv))
    summary = sweep(args.protocol, methods[0], space, objective=args.objective, datasets=args.datasets,
                    partitions=args.partitions, seeds=args.seeds, scale=args.scale, overrides=overrides,
                    address=args.address, search_seed=args.search_seed, aux=args.aux, settings=settings)
    objective = summary["objective"]
    tested = {(record["protocol"] + "/" + record["dataset"] + "/" + record["partition"], record["seed"], record["method"]):
              record for record in ResultStore(settings.resolved().out).latest() if record["scale"] == args.scale}
    rows = []
    for cell in summary["cells"]:
        record = tested.get((cell["task"], cell["seed"], cell["chosen"]))
        rows.append([f"{cell['task']}/seed{cell['seed']}", cell["chosen"] or "every candidate failed",
                     f"{cell['validation'][objective] * 100:.1f}" if cell["chosen"] else "",
                     f"{record['metrics'][objective] * 100:.1f}" if record else "", len(cell["candidates"])])
    values = [float(row[3]) for row in rows if row[3]]
    if len(values) > 1:
        rows.append(["mean ± std over cells", "", "", f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}", ""])
    print(f"sweep {summary['sweep_id']} of {summary['method']}: {space.size()} configurations per cell, each cell's "
          f"choice by validation {objective} ({summary['mode']}), then run once on test; every candidate: "
          f"{summary['search']}.json\n")
    print(tabulate(rows, headers=["cell", "chosen", f"validation {objective} %", f"test {objective} %", "candidates"],
                   tablefmt="github", disable_numparse=True))
    failed = [cell for cell in summary["cells"] if not cell["chosen"]] or summary.get("test_failed")
    return 1 if failed else 0


def cmd_samples(args) -> int:
    from bench.evaluation import single_task
    from bench.samples import draw, sample_settings, save_grid

    output = _output_file(args.output)
    task = single_task(args.protocol, args.dataset, args.partition)
    settings = sample_settings(args.cache, args.data_root)
    images = draw(args.model, task, args.scale, _overrides(args), args.seed, args.count, settings, args.sample_seed)
    save_grid(images, output)
    print(f"{len(images)} images from {args.model} ({task.name}, seed {args.seed}, {args.scale}) -> {output}")
    return 0


def cmd_data(args) -> int:
    """Per dataset: present or not, where it was looked for, images per split, how to obtain it."""
    from bench.data import DATASETS, data_root, read_split
    from bench.datasets._common import downloads_off

    root = data_root(args.data_root)
    for name in args.datasets or DATASETS.names():
        source = DATASETS.get(name)
        counts, problems = {}, {}
        with downloads_off():  # only look at what is there
            for split in source.splits:
                try:
                    counts[split] = len(read_split(name, split, root))
                except BenchError as err:
                    problems[split] = str(err)
        state = "present" if not problems else "partly present" if counts else "absent"
        print(f"{name}: {state}  ({source.description})")
        print(f"  looked in: {', '.join(str(place) for place in source.locations(root)) or 'nowhere (generated)'}")
        if counts:
            print(f"  images: {', '.join(f'{split} {count}' for split, count in counts.items())}")
        print(f"  how to obtain: {source.how_to_obtain}")
        if problems:
            print(f"  missing: {', '.join(problems)}; first problem: {next(iter(problems.values()))}")
    return 0


def _floats(text: str) -> list[float]:
    try:
        values = [float(item) for item in _csv(text)]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.5,0.5,0.5 (got {text!r})")
    return values


def cmd_evaluate(args) -> int:
    from tabulate import tabulate

    from bench.evaluation import single_task, evaluate, load_checkpoint
    from bench.method import parse_methods
    from bench.store import write_text_atomic

    if (args.mean is None) != (args.std is None):
        raise BenchError("give both --mean and --std, or neither")
    if args.std and min(args.std) <= 0:
        raise BenchError(f"--std values must be > 0 (got {','.join(f'{v:g}' for v in args.std)})")
    output = _output_file(args.output) if args.output else None
    if args.methods:
        parse_methods(args.methods)  # a bad method or option fails before the checkpoint and data are read
    task = single_task(args.protocol, args.dataset, args.partition)
    model = load_checkpoint(args.checkpoint, args.arch, task, args.width)
    frame = evaluate(
        model, args.protocol, args.methods, dataset=task.dataset, partition=task.partition,
        normalize=(args.mean, args.std) if args.mean else None, seed=args.seed, train_limit=args.train_limit,
        test_limit=args.test_limit, data_root=args.data_root,
    )
    if output:
        write_text_atomic(output, frame.to_csv(index=False))
    columns = ["method", "ood_set", "auroc", "fpr95", "aupr_in", "aupr_out", "accuracy", "fit_s"]
    print(f"{task.name}, checkpoint {args.checkpoint} ({args.arch}); fpr95 is ID-positive (SPEC.md §1)")
    print(tabulate(frame[columns], headers="keys", tablefmt="github", showindex=False, floatfmt=".4f"))
    return 0


def _method_facts(name: str, entry) -> dict:
    from bench.method import MethodSpec

    return {"summary": entry.summary, "needs": list(MethodSpec(name).requires())}


def _protocol_facts(name: str, protocol) -> dict:
    return {"description": protocol.description,
            "partitions": {dataset: protocol.partition_names(dataset) for dataset in protocol.dataset_names()}}


def _dataset_facts(name: str, source) -> dict:
    return {"num_classes": source.num_classes, "image_shape": source.image_shape, "how_to_obtain": source.how_to_obtain}


def _model_facts(kind: str, model) -> dict:
    return {"network": model.network, "description": model.description}


def _recipe_facts(name: str, table) -> dict:
    from bench.recipes import flat_fields

    rows = []
    for key, entry in table.entries.items():
        family, scale = key if isinstance(key, tuple) else ("any", key)
        rows.append({"scale": scale, "family": family,
                     "settings": " ".join(f"{path}={value}" for path, value in flat_fields(entry).items())})
    return {"entries": rows}


# `bench list <what>`: the registry (`module:object`) and what is shown of each entry. bench/registry_index.json
# keeps those facts (`python -m bench.registry` writes it from this table), so listing imports no entry's module.
LISTED = {"methods": ("bench.method:METHODS", _method_facts), "protocols": ("bench.protocol:PROTOCOLS", _protocol_facts),
          "datasets": ("bench.data:DATASETS", _dataset_facts), "models": ("bench.shared:SHARED_MODELS", _model_facts),
          "recipes": ("bench.recipes:RECIPE_TABLES", _recipe_facts)}


def cmd_list(args) -> int:
    from bench.registry import listing

    entries = listing(*LISTED[args.what])
    if args.what == "methods":
        for name, facts in entries:
            print(f"{name:20s} {facts['summary']}  [needs: {', '.join(facts['needs']) or 'nothing'}]")
    elif args.what == "protocols":
        for name, facts in entries:
            print(f"{name:12s} {facts['description']}")
            for dataset, partitions in facts["partitions"].items():
                print(f"  {dataset:14s} partitions: {', '.join(partitions)}")
    elif args.what == "datasets":
        for name, facts in entries:
            shape = tuple(facts["image_shape"]) if facts["image_shape"] is not None else None
            print(f"{name:14s} {facts['num_classes']:4d} classes {shape}  {facts['how_to_obtain']}")
    elif args.what == "recipes":
        for name, facts in entries:
            print(f"{name}  (--recipe {name}.<field>=<value>)")
            for row in facts["entries"]:
                if args.scale in (None, row["scale"]):
                    print(f"  {row['scale']:9s} {row['family']:6s} {row['settings']}")
    else:
        for name, facts in entries:
            print(f"{name:26s} {'network' if facts['network'] else 'model':8s} {facts['description']}")
    return 0


def _frame(args, per_ood_set: bool = False, params: bool = False):
    from bench.reports import for_recipe
    from bench.store import ResultStore

    frame = for_recipe(ResultStore(args.out).frame(per_ood_set=per_ood_set, recompute=getattr(args, "recompute", False),
                                                   params=params), _overrides(args))
    if getattr(args, "aux", None) and not frame.empty:  # trials that trained on no auxiliary set stay
        frame = frame[frame["aux"].isna() | (frame["aux"] == args.aux)]
    for column in ("protocol", "scale"):
        wanted = getattr(args, column, None)
        if wanted and not frame.empty:
            frame = frame[frame[column] == wanted]
    return frame


def cmd_table(args) -> int:
    from bench.reports import cost_table, table1, table2, table3, table_moodcat, table_ood

    frame = _frame(args)
    methods = _csv(args.methods) if args.methods else None
    builders = {
        "1": lambda: table1(frame, args.metric, methods, args.out, args.spread),
        "2": lambda: table2(frame, args.metric, methods, args.out, args.spread),
        "3": lambda: table3(frame, methods, args.out),
        "cost": lambda: cost_table(frame, methods, args.out),
        "ood": lambda: table_ood(_frame(args, per_ood_set=True), args.metric, methods, args.out, args.spread),
        "moodcat": lambda: table_moodcat(_frame(args, per_ood_set=True), methods, args.out),
    }
    if args.number not in builders:
        raise BenchError(f"table {args.number} is not available; choose one of {', '.join(builders)}")
    print(builders[args.number]())
    return 0


def cmd_compare(args) -> int:
    from bench.compare import TIME_METRICS, compare, format_comparison
    from bench.reports import PERCENT_METRICS

    if args.metric not in (*PERCENT_METRICS, *TIME_METRICS):
        raise BenchError(f"unknown metric {args.metric!r}; choose one of {', '.join((*PERCENT_METRICS, *TIME_METRICS))}")
    if not 0 < args.confidence < 1:
        raise BenchError(f"--confidence must lie between 0 and 1 (got {args.confidence:g})")
    if args.resamples < 100:
        raise BenchError(f"--resamples must be at least 100 (got {args.resamples})")
    result = compare(_frame(args), args.a, args.b, args.metric, args.confidence, args.resamples, args.seed)
    print(format_comparison(result))
    return 0


EXPORT_FORMATS = ("csv", "parquet")


def cmd_export(args) -> int:
    """One row per trial (or per trial and OOD set) with its metrics, times and method parameters."""
    output = _output_file(args.output)
    fmt = args.format or output.suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise BenchError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)} (--format, or the "
                         "--output file's suffix)")
    frame = _frame(args, per_ood_set=args.per_ood_set, params=True)
    if frame.empty:
        raise BenchError(f"no results found in {args.out}; run `bench run ...` first, or pass --out to the folder it wrote")
    frame = frame.drop(columns=["recipe_tables"]).assign(overrides=frame["overrides"].astype(str))
    parameters = sorted(column for column in frame.columns if column.startswith("param."))
    frame = frame[[column for column in frame.columns if column not in parameters] + parameters]
    from bench.store import write_atomic

    if fmt == "csv":
        write_atomic(output, lambda handle: frame.to_csv(handle, index=False))
    else:
        write_atomic(output, lambda handle: frame.to_parquet(handle, index=False), mode="wb")
    print(f"{len(frame)} rows ({'per trial and OOD set' if args.per_ood_set else 'per trial'}) -> {output}")
    return 0


def cmd_leaderboard(args) -> int:
    from bench.reports import leaderboard
    from bench.store import write_text_atomic

    output = _output_file(args.output) if args.output else None
    text = leaderboard(_frame(args), args.out)
    if output:
        write_text_atomic(output, text + "\n")
    print(text)
    return 0


def _result_filters(parser: argparse.ArgumentParser) -> None:
    """Which stored results a report reads: the folder, and a protocol, scale and recipe within it."""
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--protocol")
    parser.add_argument("--scale")
    parser.add_argument("--recipe", action="append", metavar="OVERRIDES",
                        help="results of the recipe with these overrides (default: the scale's own recipe)")
    parser.add_argument("--aux", help="results of methods trained on this auxiliary set (others are kept)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Benchmark OOD detection methods.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run trials and print Table 1")
    run.add_argument("--methods", required=True, help="comma list; options in brackets, e.g. cmg_e[sigma=3],energy")
    run.add_argument("--protocol", required=True)
    run.add_argument("--datasets", type=_csv, help="comma list (default: all of the protocol's)")
    run.add_argument("--partitions", type=_csv, help="comma list, e.g. 0-5,1-6 (default: all)")
    run.add_argument("--seeds", type=_seeds, default=[0], help=f"comma list of integers 0..{MAX_SEED} (default: 0)")
    run.add_argument("--scale", default="demo",
                     help="smoke (tests) | demo (minutes; not for conclusions) | paper (GPU) (default: demo)")
    run.add_argument("--recipe", action="append", metavar="OVERRIDES",
                     help=RECIPE_HELP)
    run.add_argument("--out", default=DEFAULT_OUT,
                     help=f"result folder or fsspec URL, e.g. s3://bucket/results (default: {DEFAULT_OUT})")
    run.add_argument("--cache", help="model cache folder or fsspec URL (default: $BENCH_CACHE or ~/.cache/bench/models); "
                     "on a cluster, storage every node shares")
    run.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data); on a cluster, "
                     "the same path on every node")
    run.add_argument("--executor", default="ray", help="ray (default) or local (in-process, for debugging)")
    run.add_argument("--address", help="an existing Ray cluster: auto, host:port or ray://host:10001 (default: "
                     "$RAY_ADDRESS, else a local Ray started for the run)")
    run.add_argument("--cpus-per-trial", type=float, help="CPU threads per job (default: 1 on Ray, all cores locally)")
    run.add_argument("--gpus-per-trial", type=float, default=None,
                     help="GPU fraction per job, e.g. 0.25 packs 4 per GPU (default: 1 with a GPU, else 0)")
    run.add_argument("--force", action="store_true", help="redo trials that already have results")
    run.add_argument("--retrain", action="store_true", help="retrain shared models even when cached")
    run.add_argument("--aux", help="auxiliary outlier set for methods that train on one (OE, MCD, UDG), instead of the "
                     "protocol's (`bench list protocols`): a dataset name, or none")
    run.add_argument("--skip-missing", action="store_true",
                     help="leave out OOD sets whose data is missing (listed in the results) instead of failing")
    run.set_defaults(handler=cmd_run)

    sweeper = sub.add_parser("sweep", help="tune a method's options on validation data (Ray Tune), then run the "
                             "best configuration once on the test sets")
    sweeper.add_argument("--method", required=True, help="one method, with any options it keeps fixed, e.g. odin or "
                         "knn[net=cac]")
    sweeper.add_argument("--grid", help="option=values, ';' between options, e.g. \"temperature=1,10,100;epsilon=0,0.0014\"")
    sweeper.add_argument("--random", help="option=distribution, ';' between options: uniform(a,b), loguniform(a,b), "
                         "randint(a,b), choice(x,y,...), e.g. \"k=randint(1,200)\"")
    sweeper.add_argument("--samples", type=_positive_int, help="random draws (crossed with --grid; default 1)")
    sweeper.add_argument("--objective", default="auroc",
                         help="validation metric to choose by: auroc (default), aupr_in, aupr_out, fpr95, fpr95_oodpos")
    sweeper.add_argument("--search-seed", type=_seed, default=0, help="seed of the random draws (default 0)")
    sweeper.add_argument("--protocol", required=True)
    sweeper.add_argument("--datasets", type=_csv, help="comma list (default: all of the protocol's)")
    sweeper.add_argument("--partitions", type=_csv, help="comma list (default: all)")
    sweeper.add_argument("--seeds", type=_seeds, default=[0], help="comma list (default: 0); each (partition, seed) "
                         "gets its own choice")
    sweeper.add_argument("--scale", default="demo", help="smoke | demo | paper (default: demo)")
    sweeper.add_argument("--recipe", action="append", metavar="OVERRIDES", help=RECIPE_HELP)
    sweeper.add_argument("--aux", help="auxiliary outlier set instead of the protocol's, as for bench run")
    sweeper.add_argument("--out", default=DEFAULT_OUT, help=f"result folder (default: {DEFAULT_OUT}); the search is "
                         "kept under <out>/sweeps/")
    sweeper.add_argument("--cache", help="model cache folder (default: $BENCH_CACHE or ~/.cache/bench/models)")
    sweeper.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data)")
    sweeper.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    sweeper.add_argument("--cpus-per-trial", type=float, help="CPU threads per candidate (default 1)")
    sweeper.add_argument("--gpus-per-trial", type=float, help="GPU fraction per candidate, e.g. 0.25")
    sweeper.set_defaults(handler=cmd_sweep)

    sampler = sub.add_parser("samples", help="save a PNG grid of the images a trained generative model makes")
    sampler.add_argument("--model", required=True, help="a shared model that generates images (`bench list models`), "
                         "e.g. ccc or osrci")
    sampler.add_argument("--protocol", required=True)
    sampler.add_argument("--dataset", help="the dataset it was trained on (needed when the protocol has several)")
    sampler.add_argument("--partition", help="the partition it was trained on, e.g. 0-5")
    sampler.add_argument("--seed", type=_seed, default=0, help="the trial seed it was trained with (default 0)")
    sampler.add_argument("--scale", default="demo", help="the scale it was trained at (default: demo)")
    sampler.add_argument("--recipe", action="append", metavar="OVERRIDES", help="the overrides it was trained with")
    sampler.add_argument("--count", type=_positive_int, default=64, help="images in the grid (default 64)")
    sampler.add_argument("--sample-seed", type=_seed, default=0, help="seed of the draw (default 0)")
    sampler.add_argument("--output", required=True, help="PNG file to write")
    sampler.add_argument("--cache", help="model cache (default: $BENCH_CACHE or ~/.cache/bench/models)")
    sampler.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data)")
    sampler.set_defaults(handler=cmd_samples)

    evaluator = sub.add_parser("evaluate", help="score post-hoc methods on your own trained classifier")
    evaluator.add_argument("--checkpoint", required=True, help="state dict saved with torch.save(model.state_dict())")
    evaluator.add_argument("--arch", required=True,
                           help="a bench backbone (cnn4, cnn9, resnet18: bench's Classifier) or torchvision.<model>")
    evaluator.add_argument("--width", type=_positive_int, help="channel width of a bench backbone (default: its own)")
    evaluator.add_argument("--protocol", required=True)
    evaluator.add_argument("--dataset", help="the dataset the model was trained on (needed when the protocol has several)")
    evaluator.add_argument("--partition", help="the partition it was trained on, e.g. 0-5")
    evaluator.add_argument("--methods", help="comma list (default: every method that needs only a classifier)")
    evaluator.add_argument("--mean", type=_floats, help="per-channel input mean the model expects, e.g. 0.49,0.48,0.45")
    evaluator.add_argument("--std", type=_floats, help="per-channel input std the model expects")
    evaluator.add_argument("--seed", type=_seed, default=0)
    evaluator.add_argument("--train-limit", type=_positive_int,
                           help="fit statistics on a seeded subset of the ID training set")
    evaluator.add_argument("--test-limit", type=_positive_int, help="score a seeded subset of each test set")
    evaluator.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data)")
    evaluator.add_argument("--output", help="also write the table as CSV to this file")
    evaluator.set_defaults(handler=cmd_evaluate)

    lister = sub.add_parser("list", help="list methods, protocols, datasets or shared models")
    lister.add_argument("what", choices=list(LISTED))
    lister.add_argument("--scale", help="recipes: only this scale's entries")
    lister.set_defaults(handler=cmd_list)

    data = sub.add_parser("data", help="which datasets are present, where they are looked for, how to obtain them")
    data.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data)")
    data.add_argument("--datasets", type=_csv, help="comma list (default: every registered dataset)")
    data.set_defaults(handler=cmd_data)

    table = sub.add_parser("table", help="print a paper table from stored results")
    table.add_argument("number", help="1 (AUROC etc. per dataset and method), 2 (each network's own method "
                       "against <network>+cmg_e), 3 (execution time), cost (a method's own seconds against its shared "
                       "models'), ood (one row per OOD set) or moodcat (MOODCAT's layout: FPR@95, AUROC, AUPR-In/Out per OOD set "
                       "and method, their mean ± std over the sets, ID accuracy)")
    table.add_argument("--metric", default="auroc", help="for table 1: auroc, fpr95, fpr95_oodpos, aupr_in, aupr_out, accuracy")
    table.add_argument("--methods", help="comma list: column order and filter (table 2: the base networks)")
    table.add_argument("--recompute", action="store_true",
                       help="compute the metrics again from each trial's stored scores (they must equal the stored ones)")
    table.add_argument("--spread", default="partitions",
                       help="what ± is over: partitions (default; the per-partition mean over seeds) or cells "
                       "(every partition x seed)")
    _result_filters(table)
    table.set_defaults(handler=cmd_table)

    comparer = sub.add_parser("compare", help="paired difference of two methods over the cells both have, "
                              "with a bootstrap interval and the win count")
    comparer.add_argument("a", help="method label, e.g. cmg_e")
    comparer.add_argument("b", help="method label, e.g. energy")
    comparer.add_argument("--metric", default="auroc", help="auroc (default), fpr95, fpr95_oodpos, aupr_in, aupr_out, "
                          "accuracy, or a time: fit_s, score_s, shared_s, total_s")
    comparer.add_argument("--confidence", type=float, default=0.95)
    comparer.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    comparer.add_argument("--seed", type=_seed, default=0, help="seed of the bootstrap")
    _result_filters(comparer)
    comparer.set_defaults(handler=cmd_compare)

    exporter = sub.add_parser("export", help="write the stored results as a table file, one row per trial (and per "
                              "OOD set), with each method parameter as a column")
    exporter.add_argument("--output", required=True, help="file to write, e.g. results.parquet or results.csv")
    exporter.add_argument("--format", help="csv or parquet (default: the --output file's suffix)")
    exporter.add_argument("--per-ood-set", action="store_true", help="one row per trial and OOD set")
    _result_filters(exporter)
    exporter.set_defaults(handler=cmd_export)

    board = sub.add_parser("leaderboard", help="markdown leaderboard ranked by mean AUROC")
    _result_filters(board)
    board.add_argument("--output", help="also write the markdown to this file")
    board.set_defaults(handler=cmd_leaderboard)

    from bench.plots import add_plot_commands
    from bench.report_html import add_report_command

    add_plot_commands(sub)  # bench plot roc|scores|table3|partitions|samples
    add_report_command(sub)  # bench report --html FILE
    return parser


_STOPPED_BY: list[int] = []  # the signal that stopped this run (Ray turns a KeyboardInterrupt into a plain one)


def _stop(signum, _frame) -> None:
    """SIGTERM and SIGINT stop a run the same way: a KeyboardInterrupt where the program is, so that
    in-flight jobs are cancelled and Ray shuts down on the way out (job schedulers send SIGTERM)."""
    _STOPPED_BY.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except BenchError as err:  # a bad flag: the same one line as every other error
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S")
    for per_epoch in ("bench.training", "bench.shared_models"):  # every procedure's epoch lines: only with -v
        logging.getLogger(per_epoch).setLevel(logging.INFO if args.verbose else logging.WARNING)
    if sys.stderr.isatty():  # progress bars for a user watching; never in CI logs or files (bench.progress)
        os.environ.setdefault("BENCH_PROGRESS", "1")
    _STOPPED_BY.clear()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {signum: signal.signal(signum, _stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return args.handler(args)
    except BenchError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`bench list methods | head`): nothing left to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        signum = _STOPPED_BY[0] if _STOPPED_BY else signal.SIGINT
        print(f"bench: stopped by {signal.Signals(signum).name}; finished trials are saved, run the same command "
              "again to resume", file=sys.stderr)
        return 128 + signum
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


