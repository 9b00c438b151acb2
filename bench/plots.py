"""`bench plot`: figures of stored results, and of what the generators make, as PNG and SVG.

- `roc`: ROC curves of several methods on one task and OOD set, ID the positive class, from the
  stored per-image scores (`ResultStore.scores`); the area under each curve is the stored AUROC.
- `scores`: ID and OOD score distributions (histograms or KDEs), one panel per method.
- `table3`: each method's time split into its own (fit + scoring) and the shared models it is charged for.
- `partitions`: a metric per (partition, seed) cell for each method, with the mean ± std of Table 1.
- `samples`: image grids from cached generators: CMG's class-mixed pseudo-OOD for a few sigmas, and
  MOODCAT's masked inputs and syntheses for ID and OOD test images (CMG's and MOODCAT's figures).

Every figure is drawn on a `matplotlib.figure.Figure` and never through pyplot, so no display or
interactive backend is involved: the PNG comes from the Agg canvas, the SVG from the SVG canvas.
The figure builders take data and return a Figure; `bench report` embeds the same figures.
matplotlib, seaborn and torch are imported inside the functions, so `bench --help` stays light.
"""
from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError

DPI = 150
SUFFIXES = (".png", ".svg")
TASK_COLUMNS = ("protocol", "dataset", "partition", "seed", "scale")


# --- writing figures ------------------------------------------------------------------------------------------------

def new_figure(width: float, height: float):
    """A Figure of its own, outside pyplot (no global state, no display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_bytes(figure, fmt: str = "png", dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.1)  # no label cut off
    return buffer.getvalue()


def output_paths(path: str) -> tuple[Path, Path]:
    """(FILE.png, FILE.svg) for `--output FILE.png` (or FILE.svg, or FILE), checked before anything is computed."""
    from bench.cli import _output_file

    output = Path(path).expanduser()
    if output.suffix.lower() not in ("", *SUFFIXES):
        raise BenchError(f"--output {path}: name a .png file (its .svg is written beside it), e.g. "
                         f"{output.with_suffix('.png')}")
    png = _output_file(str(output.with_suffix(".png")))
    return png, png.with_suffix(".svg")


def save(figure, output: tuple[Path, Path]) -> tuple[Path, Path]:
    """Write the figure as PNG and SVG, each atomically."""
    from bench.store import write_atomic

    for path in output:
        data = figure_bytes(figure, path.suffix[1:])
        write_atomic(path, lambda handle, data=data: handle.write(data), mode="wb")
    return output


# --- choosing stored results ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskScores:
    """The per-image scores of one task (protocol, dataset, partition, seed, scale) on one OOD set.

    `frame` has one row per (method, image): `method`, `score`, `is_id` and `images` ("ID (id_test)" or
    "OOD (<set>)"). As in every record's metrics, images of the OOD set that are not OOD (SC-OOD's
    ID-labelled ones) count as ID.
    """

    task: dict
    ood_set: str
    methods: list[str]
    frame: Any
    stored_auroc: dict[str, float]

    @property
    def name(self) -> str:
        return task_name(self.task)


def task_name(task: dict) -> str:
    return f"{task['protocol']}/{task['dataset']}/{task['partition']} seed {task['seed']} ({task['scale']})"


def _values(frame, column: str) -> str:
    return ", ".join(str(value) for value in sorted(set(frame[column])))


def choose_task(frame, where: str, **wanted) -> Any:
    """The rows of one task: those matching `wanted` (dataset=..., partition=..., seed=...; None: any), then the first
    task in sorted order. A value that matches nothing is a one-line error naming what is stored."""
    from bench.reports import _require

    frame = _require(frame, where)
    for column, value in wanted.items():
        if value is None:
            continue
        if value not in set(frame[column]):
            raise BenchError(f"no stored results with {column} {value} in {where} (for the other choices); stored: "
                             f"{_values(frame, column)}")
        frame = frame[frame[column] == value]
    first = frame.sort_values(list(TASK_COLUMNS)).iloc[0]
    for column in TASK_COLUMNS:
        frame = frame[frame[column] == first[column]]
    return frame


def _check_methods(frame, methods: list[str] | None, what: str) -> list[str]:
    from bench.reports import _method_order

    unknown = [method for method in methods or () if method not in set(frame["method"])]
    if unknown:
        raise BenchError(f"no stored results of {', '.join(unknown)} for {what}; stored: {_values(frame, 'method')}")
    return _method_order(frame, methods)


def task_scores(frame, store, where: str, dataset=None, partition=None, seed=None, ood_set=None,
                methods=None) -> TaskScores:
    """The stored scores of `methods` (default: all) on one task and OOD set (default: the first stored) of `frame`."""
    import pandas as pd

    rows = choose_task(frame, where, dataset=dataset, partition=partition, seed=seed)
    task = {column: rows.iloc[0][column] for column in TASK_COLUMNS}
    task = {key: int(value) if key == "seed" else str(value) for key, value in task.items()}
    name = task_name(task)
    order = _check_methods(rows, methods, name)
    rows = rows[rows["method"].isin(order)]
    scores = store.scores(**task)
    scores = scores[scores["trial_id"].isin(set(rows["trial_id"]))] if not scores.empty else scores
    missing = [method for method in order if scores.empty or method not in set(scores["method"])]
    if missing:
        raise BenchError(f"the results of {', '.join(missing)} on {name} have no stored scores (written by an older "
                         "version); re-run them with --force")
    sets = [value for value in dict.fromkeys(scores["set"]) if value != "id_test"]
    chosen = ood_set or sets[0]
    if chosen not in sets:
        raise BenchError(f"no OOD set {chosen!r} in the stored scores of {name}; stored: {', '.join(sets)}")
    id_part = scores[(scores["set"] == "id_test") | ((scores["set"] == chosen) & ~scores["is_ood"])]
    ood_part = scores[(scores["set"] == chosen) & scores["is_ood"]]
    joined = pd.concat([id_part.assign(is_id=True, images="ID (id_test)"),
                        ood_part.assign(is_id=False, images=f"OOD ({chosen})")], ignore_index=True)
    per_set = store_auroc(store, rows, chosen)
    return TaskScores(task, chosen, order, joined[["method", "score", "is_id", "images"]], per_set)


def store_auroc(store, rows, ood_set: str) -> dict[str, float]:
    """The stored AUROC on `ood_set` of each method in `rows` (one trial per method)."""
    records = {record["trial_id"]: record for record in store.latest() if record["trial_id"] in set(rows["trial_id"])}
    return {records[trial]["method"]: records[trial]["ood_sets"][ood_set]["auroc"] for trial in rows["trial_id"]
            if ood_set in records[trial].get("ood_sets", {})}


# --- figures of stored results --------------------------------------------------------------------------------------

def roc_curves(chosen: TaskScores) -> dict[str, tuple]:
    """{method: (fpr, tpr, area)}: sklearn's ROC with ID as the positive class and the trapezoidal area under it,
    which equals the harness's AUROC (Mann-Whitney, ties counted one half)."""
    from sklearn.metrics import auc, roc_curve

    curves = {}
    for method in chosen.methods:
        rows = chosen.frame[chosen.frame["method"] == method]
        fpr, tpr, _ = roc_curve(rows["is_id"], rows["score"])
        curves[method] = (fpr, tpr, float(auc(fpr, tpr)))
    return curves


def roc_figure(chosen: TaskScores):
    import seaborn as sns

    curves = roc_curves(chosen)
    figure = new_figure(6, 5.5)
    with sns.axes_style("whitegrid"):
        axes = figure.add_subplot()
    colours = sns.color_palette("colorblind", len(curves))
    for colour, (method, (fpr, tpr, area)) in zip(colours, curves.items()):
        axes.plot(fpr, tpr, color=colour, linewidth=1.6, label=f"{method} (AUROC {area * 100:.1f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (OOD images accepted as ID)",
             ylabel="true positive rate (ID images accepted)", title=f"ROC, {chosen.name}\nID test vs {chosen.ood_set}")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def scores_figure(chosen: TaskScores, kind: str = "hist"):
    """One panel per method: the ID and OOD score distributions (density, each normalised on its own)."""
    import seaborn as sns

    draw = {"hist": lambda data, axes: sns.histplot(data, x="score", hue="images", stat="density", common_norm=False,
                                                    element="step", bins=40, ax=axes),
            "kde": lambda data, axes: sns.kdeplot(data, x="score", hue="images", common_norm=False, fill=True,
                                                  warn_singular=False, ax=axes)}
    if kind not in draw:
        raise BenchError(f"unknown --kind {kind!r}; choose one of {', '.join(draw)}")
    count = len(chosen.methods)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = new_figure(4.2 * columns, 3.2 * rows + 0.4)
    with sns.axes_style("whitegrid"):
        grid = figure.subplots(rows, columns, squeeze=False)
    for axes, method in zip(grid.flat, chosen.methods):
        draw[kind](chosen.frame[chosen.frame["method"] == method], axes)
        auroc = chosen.stored_auroc.get(method)
        axes.set_title(method + (f" (AUROC {auroc * 100:.1f})" if auroc is not None else ""), fontsize="medium")
        axes.set_xlabel("ID score (higher = more ID)")
    for axes in grid.flat[count:]:
        axes.set_visible(False)
    figure.suptitle(f"Scores, {chosen.name}: ID test vs {chosen.ood_set}")
    return figure


def _facets(frame, count_per_row: int = 2):
    """The (protocol, dataset, scale) groups of `frame`, a panel each, and the (rows, columns) of their grid."""
    groups = list(frame.groupby(["protocol", "dataset", "scale"], sort=True))
    columns = min(count_per_row, len(groups))
    return groups, math.ceil(len(groups) / columns), columns


def table3_figure(frame, methods: list[str] | None = None, where: str = ""):
    """Minutes per dataset as in Table 3 (summed over partitions, mean over seeds), split into the method's own time
    (fit + scoring) and the training time of the shared models it uses."""
    import seaborn as sns

    from bench.reports import _require

    frame = _require(frame, where)
    order = _check_methods(frame, methods, f"the results in {where}")
    frame = frame[frame["method"].isin(order)].assign(own_s=frame["fit_s"] + frame["score_s"])
    groups, rows, columns = _facets(frame)
    figure = new_figure(6.5 * columns, 0.45 * len(order) * rows + 1.6 * rows)
    with sns.axes_style("whitegrid"):
        grid = figure.subplots(rows, columns, squeeze=False)
    own_colour, shared_colour = sns.color_palette("colorblind", 2)
    for axes, ((protocol, dataset, scale), group) in zip(grid.flat, groups):
        per_seed = group.groupby(["method", "seed"])[["own_s", "shared_s"]].sum()
        minutes = per_seed.groupby("method").mean() / 60
        present = [method for method in order if method in minutes.index][::-1]  # first method on top
        own, shared = minutes.loc[present, "own_s"], minutes.loc[present, "shared_s"]
        axes.barh(present, own, color=own_colour, label="own: fit + scoring")
        axes.barh(present, shared, left=own, color=shared_colour, label="shared models it is charged for")
        for position, (mine, theirs) in enumerate(zip(own, shared)):
            axes.text(mine + theirs, position, f" {mine + theirs:.2f}", va="center", fontsize="small")
        axes.set(xlabel="minutes per dataset (sum over partitions, mean over seeds)",
                 title=f"{dataset} ({protocol}, {scale})")
        axes.margins(x=0.15)
    for axes in grid.flat[len(groups):]:
        axes.set_visible(False)
    figure.legend(*grid.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small")
    figure.suptitle("Table 3: own time and shared models' time")
    return figure


def partitions_figure(frame, metric: str = "auroc", methods: list[str] | None = None, where: str = ""):
    """The metric of every (partition, seed) cell per method (a dot per cell, coloured by partition), with the
    mean ± std over partitions of the per-partition mean over seeds: the numbers of Table 1."""
    import seaborn as sns

    from bench.reports import PERCENT_METRICS, _require, _units

    if metric not in PERCENT_METRICS:
        raise BenchError(f"unknown metric {metric!r}; choose one of {', '.join(PERCENT_METRICS)}")
    frame = _require(frame, where)
    order = _check_methods(frame, methods, f"the results in {where}")
    frame = frame[frame["method"].isin(order)].assign(percent=frame[metric] * 100)
    groups, rows, columns = _facets(frame)
    figure = new_figure(max(4.5, 1.1 * len(order) + 2.5) * columns, 4.2 * rows)
    with sns.axes_style("whitegrid"):
        grid = figure.subplots(rows, columns, squeeze=False)
    for axes, ((protocol, dataset, scale), group) in zip(grid.flat, groups):
        present = [method for method in order if method in set(group["method"])]
        sns.stripplot(group, x="method", y="percent", hue="partition", order=present,
                      hue_order=sorted(set(group["partition"])), jitter=0.15, size=5, palette="colorblind", ax=axes)
        units = _units(group, "percent", "partitions")
        summary = units.groupby("method")["percent"].agg(["mean", "std"]).reindex(present)
        axes.errorbar(range(len(present)), summary["mean"], yerr=summary["std"].fillna(0), fmt="_", color="black",
                      markersize=22, capsize=8, linewidth=1.2, label="mean ± std over partitions")
        axes.set(xlabel="", ylabel=f"{metric} (%)", title=f"{dataset} ({protocol}, {scale})")
        axes.tick_params(axis="x", labelrotation=30)
        axes.legend(fontsize="small", title="partition", title_fontsize="small", loc="upper left",
                    bbox_to_anchor=(1.01, 1), borderaxespad=0)
    for axes in grid.flat[len(groups):]:
        axes.set_visible(False)
    seeds = frame.groupby(["protocol", "dataset", "partition"])["seed"].nunique().max()
    figure.suptitle(f"{metric} per (partition, seed) cell, up to {seeds} seed(s) per partition")
    return figure


# --- image grids from cached generators -----------------------------------------------------------------------------

def image_rows_figure(rows: list[tuple[str, Any]], title: str):
    """One labelled strip of images per row; images (N, C, H, W) in [0, 1]."""
    from torchvision.utils import make_grid

    columns = max(len(images) for _, images in rows)
    figure = new_figure(0.55 * columns + 2.2, 0.62 * len(rows) + 0.8)
    grid = figure.subplots(len(rows), 1, squeeze=False)[:, 0]
    for axes, (label, images) in zip(grid, rows):
        strip = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=len(images), padding=2, pad_value=1.0)
        axes.imshow(strip.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
        for spine in axes.spines.values():
            spine.set_visible(False)
    figure.suptitle(title, fontsize="medium")
    return figure


@dataclass(frozen=True)
class Generated:
    """What `bench plot samples` needs to know of one generator to draw its figure."""

    kind: str  # the shared model whose cache entry it reads
    trained_by: str  # a method whose `bench run` trains it
    figure: Callable[..., Any]  # (request: SampleRequest) -> Figure


@dataclass(frozen=True)
class SampleRequest:
    task: Any
    scale: str
    overrides: tuple
    seed: int
    settings: Any
    count: int = 12
    sample_seed: int = 0
    sigmas: tuple[float, ...] = (1.0, 3.0, 5.0)
    ood_set: str | None = None

    def model(self, kind: str, trained_by: str):
        from bench.samples import cached_model

        return cached_model(kind, self.task, self.scale, self.overrides, self.seed, self.settings, trained_by)

    def images(self, ref):
        """A seeded subset of `count` images of a test set, as floats in [0, 1]."""
        from bench.scoring import load_ref
        from bench.training import to_float

        return to_float(load_ref(ref, self.settings, self.count, self.sample_seed).images[: self.count])


def cmg_samples(request: SampleRequest):
    """CMG's pseudo-OOD at each sigma, decoded from the cached CVAE; the same draw of class pairs, embedding mixes and
    latent direction for every sigma, so each column shows one mix at a growing distance from the mean."""
    import torch

    from methods.cmg import generate_pseudo_ood

    cvae = request.model("cvae", "cmg_e")
    rows = [("ID test", request.images(request.task.id_test))]
    for sigma in request.sigmas:
        generator = torch.Generator().manual_seed(request.sample_seed)
        images = generate_pseudo_ood(cvae, request.count, sigma, generator, torch.device("cpu"))
        rows.append((f"σ = {sigma:g}", images))
    return image_rows_figure(rows, f"CMG pseudo-OOD from the CVAE, {request.task.name}, seed {request.seed} "
                                   f"({request.scale})\neach column: one pair of classes mixed, z ~ N(0, σ²I)")


def moodcat_samples(request: SampleRequest):
    """MOODCAT's test-time inputs and syntheses: each image masked as at test time, then decoded by the cached
    generator under the label the cached classifier predicts, for ID test images and an OOD set."""
    import torch

    from bench.nets.moodcat import apply_masks
    from bench.shared_models.moodcat import GENERATORS, synthesize

    variant = GENERATORS[0]  # as released: random masks, class-conditional
    synthesizer = request.model(variant.kind, "moodcat")
    classifier = request.model("classifier", "moodcat")
    sets = list(request.task.ood_tests)
    ood_set = request.ood_set or sets[0]
    if ood_set not in sets:
        raise BenchError(f"no OOD set {ood_set!r} in {request.task.name}; it has {', '.join(sets)}")
    rows = []
    for name, ref in (("ID test", request.task.id_test), (ood_set, request.task.ood_tests[ood_set])):
        images = request.images(ref)
        with torch.no_grad():
            labels = classifier(images).argmax(dim=1)
        masked = apply_masks(images * 2 - 1, variant.mask, training=False,
                             generator=torch.Generator().manual_seed(request.sample_seed))
        # already masked, so synthesised without a second mask: G(M(x), predicted class)
        synthesis = synthesize(synthesizer, masked, labels, "none", torch.Generator())
        rows += [(name, images), (f"{name}\nmasked", (masked + 1) / 2), (f"{name}\nsynthesis", (synthesis + 1) / 2)]
    return image_rows_figure(rows, f"MOODCAT, {request.task.name}, seed {request.seed} ({request.scale})\n"
                                   "masked inputs and their syntheses under the class the classifier predicts")


GENERATORS: dict[str, Generated] = {
    "cmg": Generated("cvae", "cmg_e", cmg_samples),
    "moodcat": Generated("moodcat_generator", "moodcat", moodcat_samples),
}


# --- the commands ---------------------------------------------------------------------------------------------------

def _store(args):
    from bench.store import ResultStore

    return ResultStore(args.out)


def cmd_roc(args) -> int:
    from bench.cli import _csv, _frame

    output = output_paths(args.output)
    chosen = task_scores(_frame(args), _store(args), args.out, args.dataset, args.partition, args.seed, args.ood_set,
                         _csv(args.methods) if args.methods else None)
    save(roc_figure(chosen), output)
    print(f"ROC of {', '.join(chosen.methods)} on {chosen.name}, ID test vs {chosen.ood_set} -> {output[0]} "
          f"(and {output[1].name})")
    return 0


def cmd_scores(args) -> int:
    from bench.cli import _csv, _frame

    output = output_paths(args.output)
    chosen = task_scores(_frame(args), _store(args), args.out, args.dataset, args.partition, args.seed, args.ood_set,
                         _csv(args.methods) if args.methods else None)
    save(scores_figure(chosen, args.kind), output)
    print(f"score {args.kind}s of {', '.join(chosen.methods)} on {chosen.name}, ID test vs {chosen.ood_set} -> "
          f"{output[0]} (and {output[1].name})")
    return 0


def _filtered(args):
    from bench.cli import _frame

    frame = _frame(args)
    if args.dataset and not frame.empty:
        if args.dataset not in set(frame["dataset"]):
            raise BenchError(f"no stored results of dataset {args.dataset} in {args.out}; stored: "
                             f"{_values(frame, 'dataset')}")
        frame = frame[frame["dataset"] == args.dataset]
    return frame


def cmd_table3(args) -> int:
    from bench.cli import _csv

    output = output_paths(args.output)
    save(table3_figure(_filtered(args), _csv(args.methods) if args.methods else None, args.out), output)
    print(f"execution time per method -> {output[0]} (and {output[1].name})")
    return 0


def cmd_partitions(args) -> int:
    from bench.cli import _csv

    output = output_paths(args.output)
    methods = _csv(args.methods) if args.methods else None
    save(partitions_figure(_filtered(args), args.metric, methods, args.out), output)
    print(f"{args.metric} per partition and seed -> {output[0]} (and {output[1].name})")
    return 0


def cmd_samples(args) -> int:
    from bench.cli import _overrides
    from bench.evaluation import single_task
    from bench.samples import sample_settings

    if args.generator not in GENERATORS:
        raise BenchError(f"unknown generator {args.generator!r}; choose one of {', '.join(GENERATORS)}")
    output = output_paths(args.output or f"samples-{args.generator}.png")
    request = SampleRequest(single_task(args.protocol, args.dataset, args.partition), args.scale, _overrides(args),
                            args.seed, sample_settings(args.cache, args.data_root), args.count, args.sample_seed,
                            tuple(args.sigmas), args.ood_set)
    save(GENERATORS[args.generator].figure(request), output)
    print(f"{args.generator} samples ({request.task.name}, seed {args.seed}, {args.scale}) -> {output[0]} "
          f"(and {output[1].name})")
    return 0


def _sigmas(text: str) -> list[float]:
    from bench.cli import _floats

    values = _floats(text)
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"sigmas must be > 0 (got {text!r})")
    return values


def add_plot_commands(sub) -> None:
    """`bench plot roc|scores|table3|partitions|samples`, registered on the CLI's subcommands."""
    from bench.cli import RECIPE_HELP, _positive_int, _result_filters, _seed

    plot = sub.add_parser("plot", help="figures (PNG and SVG) from stored results, and samples of cached generators")
    kinds = plot.add_subparsers(dest="figure", required=True)

    def common(parser, name: str, help_methods: str = "comma list: which methods, in this order (default: all)"):
        _result_filters(parser)
        parser.add_argument("--methods", help=help_methods)
        parser.add_argument("--output", default=f"{name}.png",
                            help=f"PNG file to write; an SVG is written beside it (default: {name}.png)")

    def one_task(parser):
        parser.add_argument("--dataset", help="default: the first stored")
        parser.add_argument("--partition", help="e.g. 0-5 (default: the first stored)")
        parser.add_argument("--seed", type=_seed, help="default: the first stored")
        parser.add_argument("--ood-set", help="default: the task's first OOD set")

    roc = kinds.add_parser("roc", help="ROC curves of several methods on one task and OOD set (ID positive)")
    common(roc, "roc")
    one_task(roc)
    roc.set_defaults(handler=cmd_roc)

    scores = kinds.add_parser("scores", help="ID vs OOD score distributions per method on one task and OOD set")
    common(scores, "scores")
    one_task(scores)
    scores.add_argument("--kind", default="hist", help="hist (default) or kde")
    scores.set_defaults(handler=cmd_scores)

    table3 = kinds.add_parser("table3", help="each method's time: its own (fit + scoring) and its shared models'")
    common(table3, "table3")
    table3.add_argument("--dataset", help="only this dataset (default: every stored one, a panel each)")
    table3.set_defaults(handler=cmd_table3)

    partitions = kinds.add_parser("partitions", help="a metric per partition and seed for each method: the spread "
                                  "behind Table 1's mean ± std")
    common(partitions, "partitions")
    partitions.add_argument("--dataset", help="only this dataset (default: every stored one, a panel each)")
    partitions.add_argument("--metric", default="auroc", help="auroc (default), fpr95, fpr95_oodpos, aupr_in, "
                            "aupr_out, accuracy")
    partitions.set_defaults(handler=cmd_partitions)

    samples = kinds.add_parser("samples", help="image grids from a cached generator: CMG's pseudo-OOD for a few "
                               "sigmas, or MOODCAT's masked inputs and syntheses")
    samples.add_argument("--generator", default="cmg", help=f"{' or '.join(GENERATORS)} (default: cmg)")
    samples.add_argument("--protocol", required=True)
    samples.add_argument("--dataset", help="the dataset it was trained on (needed when the protocol has several)")
    samples.add_argument("--partition", help="the partition it was trained on, e.g. 0-5")
    samples.add_argument("--seed", type=_seed, default=0, help="the trial seed it was trained with (default 0)")
    samples.add_argument("--scale", default="demo", help="the scale it was trained at (default: demo)")
    samples.add_argument("--recipe", action="append", metavar="OVERRIDES", help=RECIPE_HELP)
    samples.add_argument("--count", type=_positive_int, default=12, help="images per row (default 12)")
    samples.add_argument("--sample-seed", type=_seed, default=0, help="seed of the draw and of the masks (default 0)")
    samples.add_argument("--sigmas", type=_sigmas, default=[1.0, 3.0, 5.0], help="cmg: one row per sigma "
                         "(default 1,3,5)")
    samples.add_argument("--ood-set", help="moodcat: the OOD set to show beside ID test images (default: the first)")
    samples.add_argument("--output", help="PNG file to write; an SVG is written beside it "
                         "(default: samples-<generator>.png)")
    samples.add_argument("--cache", help="model cache (default: $BENCH_CACHE or ~/.cache/bench/models)")
    samples.add_argument("--data-root", help="dataset folder (default: $BENCH_DATA or ~/.cache/bench/data)")
    samples.set_defaults(handler=cmd_samples)
