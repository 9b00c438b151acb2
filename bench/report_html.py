"""`bench report --html FILE`: one self-contained HTML page of the stored results.

The page holds the tables of `bench table` and `bench leaderboard` (the same functions of
`bench.reports`: their markdown is rendered to HTML with markdown-it-py, raw HTML escaped), the
figures of `bench plot` embedded as base64 PNGs, and where the numbers came from (each record's
provenance: commit, command, machine, library versions). It reads only the result store, except
for the generators' image grids, which come from the model cache as `bench plot samples` draws
them. A table or figure that does not apply to the stored results (Table 2 without fine-tuned
methods, MOODCAT's layout with one OOD set, a generator nothing used or that is not cached) is
left out with a short note saying why.
"""
from __future__ import annotations

import base64
import html
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BenchError

REPORT_DPI = 110


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    kind: str  # "table", "plot", "samples", "provenance"
    body: str  # HTML
    left_out: str | None = None  # why it does not apply, shown as a note instead


def section(anchor: str, title: str, kind: str, build: Callable[[], str]) -> Section:
    """The section `build` makes, or, where it raises a BenchError (it does not apply here), a note saying why."""
    try:
        return Section(anchor, title, kind, build())
    except BenchError as err:
        return Section(anchor, title, kind, note(f"Left out: {err}"), str(err))


def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("js-default")  # CommonMark with GitHub tables; raw HTML is escaped, not passed through


def note(text: str) -> str:
    """A short remark (`code` in backticks shown as code)."""
    return f'<p class="note">{_markdown().renderInline(text)}</p>'


def markdown_html(text: str) -> str:
    """A report's markdown (a title paragraph, then GitHub-style tables) as HTML, each table in a scrolling box."""
    return _markdown().render(text).replace("<table>", '<div class="scroll"><table>').replace("</table>",
                                                                                            "</table></div>")


def image_html(figure, caption: str) -> str:
    from bench.plots import figure_bytes

    data = base64.b64encode(figure_bytes(figure, "png", REPORT_DPI)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _several_ood_sets(per_set):
    if per_set.empty or per_set.groupby(["protocol", "dataset"])["ood_set"].nunique().max() < 2:
        raise BenchError("every dataset here has one OOD set, so MOODCAT's layout (a row per OOD set, mean ± std over "
                         "the sets) would repeat the tables above")
    return per_set


def table_sections(frame, per_set, where: str) -> list[Section]:
    from bench.reports import cost_table, leaderboard, table1, table2, table3, table_moodcat, table_ood

    tables = (
        ("table1", "Table 1: AUROC", lambda: table1(frame, "auroc", None, where)),
        ("table1-fpr95", "Table 1: FPR@95", lambda: table1(frame, "fpr95", None, where)),
        ("table2", "Table 2: each network's own method and +CMG-e", lambda: table2(frame, where=where)),
        ("table3", "Table 3: execution time", lambda: table3(frame, where=where)),
        ("cost", "Cost: a method's own time against its shared models'", lambda: cost_table(frame, where=where)),
        ("per-ood-set", "AUROC per OOD set", lambda: table_ood(per_set, "auroc", None, where)),
        ("moodcat", "MOODCAT's layout", lambda: table_moodcat(_several_ood_sets(per_set), None, where)),
        ("leaderboard", "Leaderboard", lambda: leaderboard(frame, where)),
    )
    return [section(anchor, title, "table", lambda build=build: markdown_html(build()))
            for anchor, title, build in tables]


def plot_sections(frame, store, where: str) -> list[Section]:
    from bench.plots import partitions_figure, roc_figure, scores_figure, table3_figure, task_scores

    sections = [
        section("plot-partitions", "AUROC per partition and seed", "plot", lambda: image_html(
            partitions_figure(frame, "auroc", None, where), "AUROC of every (partition, seed) cell; black: the mean ± "
            "std over partitions of Table 1 (bench plot partitions)")),
        section("plot-table3", "Execution time", "plot", lambda: image_html(
            table3_figure(frame, None, where), "Each method's own time and the shared models it is charged for "
            "(bench plot table3)")),
    ]
    for (protocol, dataset, scale), group in frame.groupby(["protocol", "dataset", "scale"], sort=True):
        def curves(group=group) -> str:
            chosen = task_scores(group, store, where)
            task = chosen.task
            again = (f"bench plot roc --protocol {task['protocol']} --dataset {task['dataset']} --partition "
                     f"{task['partition']} --seed {task['seed']} --scale {task['scale']} --ood-set {chosen.ood_set}")
            return (image_html(roc_figure(chosen), f"ROC on {chosen.name}, its first stored partition, seed and OOD "
                                                   f"set; for another: {again}")
                    + image_html(scores_figure(chosen), f"Score distributions on {chosen.name} (bench plot scores)"))

        sections.append(section(f"plot-{protocol}-{dataset}-{scale}",
                                f"ROC and scores: {dataset} ({protocol}, {scale})", "plot", curves))
    return sections


def sample_sections(records: list[dict], overrides: tuple, settings) -> list[Section]:
    """A grid per generator (`bench.plots.GENERATORS`) that a stored trial used, for the first such trial's task."""
    from bench.plots import GENERATORS, SampleRequest

    sections = []
    for name, generator in GENERATORS.items():
        users = sorted((record for record in records if generator.kind in record["timing"].get("shared_models", {})),
                       key=lambda record: tuple(str(record[key]) for key in ("protocol", "dataset", "partition",
                                                                              "seed", "scale")))

        def grid(users=users, generator=generator, name=name) -> str:
            from bench.evaluation import single_task

            if not users:
                raise BenchError(f"no stored trial uses {generator.kind} (run e.g. {generator.trained_by})")
            record = users[0]
            task = single_task(record["protocol"], record["dataset"], record["partition"])
            request = SampleRequest(task, record["scale"], overrides, record["seed"], settings)
            return image_html(generator.figure(request), f"{name}: from the cached {generator.kind} of {task.name}, "
                              f"seed {record['seed']} ({record['scale']}); bench plot samples --generator {name}")

        sections.append(section(f"samples-{name}", f"Samples: {name}", "samples", grid))
    return sections


def _command(provenance: dict) -> str:
    """The recorded command line, with the program shown as `bench` where it was bench (`python -m bench` too)."""
    command = provenance.get("command") or []
    if command and (command[0].endswith("bench/__main__.py") or Path(command[0]).name == "bench"):
        command = ["bench", *command[1:]]
    return shlex.join(command)


def provenance_section(records: list[dict]) -> Section:
    """One row per distinct (commit, command, machine, versions) among the records, with how many trials it made."""
    import pandas as pd
    from tabulate import tabulate

    rows = []
    for record in records:
        found = record["provenance"]
        versions = found.get("versions") or {}
        rows.append({
            "commit": found.get("git", ""),
            "command": _command(found),
            "machine": ", ".join(str(part) for part in (found.get("host"), found.get("platform"),
                                                        f"{found.get('cpus')} CPUs", found.get("gpu") or "no GPU")),
            "python": found.get("python", ""),
            "versions": ", ".join(f"{package} {version}" for package, version in sorted(versions.items()) if version),
            "finished": found.get("finished", ""),
        })
    frame = pd.DataFrame(rows)
    keys = ["commit", "command", "machine", "python", "versions"]
    grouped = frame.groupby(keys, sort=False).agg(trials=("finished", "size"), first=("finished", "min"),
                                                   last=("finished", "max")).reset_index()
    body = (note("Where the numbers came from: each record's provenance (the driver's commit and command, the "
                 "machine and library versions of the node that ran it); one row per distinct combination.")
            + '<div class="scroll">' + tabulate(grouped[["trials", *keys, "first", "last"]], headers="keys",
                                                tablefmt="html", showindex=False, disable_numparse=True) + "</div>")
    return Section("provenance", "Provenance", "provenance", body)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1350px;
       margin: 1.5em auto; padding: 0 1em; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta, .note { color: #555; } .note { font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
nav ul { columns: 3; font-size: 0.9em; } code { background: #f4f4f4; padding: 0 3px; }
"""


def page(sections: list[Section], heading: str, meta: str) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{s.anchor}" class="{s.kind}"><h2>{html.escape(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(heading)}</h1><p class=\"meta\">{meta}</p>"
            f"<nav><ul>{toc}</ul></nav>\n{body}\n</body></html>\n")


def build_report(args) -> tuple[str, list[Section]]:
    """The page for the stored results `args` selects (`--out`, `--protocol`, `--scale`, `--recipe`, `--aux`)."""
    import sys

    from bench import provenance
    from bench.cli import _frame, _overrides
    from bench.samples import sample_settings
    from bench.reports import _require
    from bench.store import ResultStore

    frame = _require(_frame(args), args.out)
    per_set = _frame(args, per_ood_set=True)
    store = ResultStore(args.out)
    wanted = set(frame["trial_id"])
    records = [record for record in store.latest() if record["trial_id"] in wanted]
    sections = table_sections(frame, per_set, args.out) + plot_sections(frame, store, args.out)
    if not args.no_samples:
        sections += sample_sections(records, _overrides(args), sample_settings(args.cache, args.data_root))
    sections.append(provenance_section(records))
    chosen = ", ".join(f"--{name} {value}" for name, value in (("protocol", args.protocol), ("scale", args.scale),
                                                              ("aux", args.aux)) if value)
    chosen += "".join(f" --recipe {text}" for text in args.recipe or ())
    meta = (f"{len(frame)} trials from <code>{html.escape(str(args.out))}</code>"
            + (f" ({html.escape(chosen.strip())})" if chosen.strip() else "")
            + f"; written {provenance.now()} by <code>{html.escape(_command({'command': sys.argv}))}</code> "
            f"at commit {html.escape(provenance.git_revision())}.")
    return page(sections, f"bench report: {args.out}", meta), sections


def cmd_report(args) -> int:
    from bench.cli import _output_file
    from bench.store import write_text_atomic

    output = _output_file(args.html)
    text, sections = build_report(args)
    write_text_atomic(output, text)
    tables = sum(s.kind == "table" and not s.left_out for s in sections)
    figures = sum(s.body.count("<img") for s in sections)
    left_out = [s.title for s in sections if s.left_out]
    print(f"report: {tables} tables, {figures} figures -> {output}"
          + (f"; left out, with a note on the page: {', '.join(left_out)}" if left_out else ""))
    return 0


def add_report_command(sub) -> None:
    """`bench report --html FILE`, registered on the CLI's subcommands."""
    from bench.cli import _result_filters

    report = sub.add_parser("report", help="one self-contained HTML page: the tables, the plots and where the numbers "
                            "came from")
    _result_filters(report)
    report.add_argument("--html", required=True, help="HTML file to write")
    report.add_argument("--cache", help="model cache for the generators' samples (default: $BENCH_CACHE or "
                        "~/.cache/bench/models)")
    report.add_argument("--data-root", help="dataset folder for the samples' real images (default: $BENCH_DATA or "
                        "~/.cache/bench/data)")
    report.add_argument("--no-samples", action="store_true", help="leave out the generators' image grids (they read "
                        "the model cache and the data, and import torch)")
    report.set_defaults(handler=cmd_report)
