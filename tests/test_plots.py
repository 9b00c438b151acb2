"""`bench plot` and `bench report --html` from a small stored run: files that decode, the ROC's area equal to the
stored AUROC, every table and an image per plot in the page, and one-line errors for bad selections."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys

import pytest
from PIL import Image

from bench.cli import main
from bench.metrics import metrics_from_samples
from bench.store import ResultStore

METHODS = ("softmax", "energy", "cmg_e")
TASK = ["--protocol", "setting1", "--dataset", "fashion_mnist", "--partition", "0-5", "--scale", "smoke"]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, smoke_cache):
    out = tmp_path_factory.mktemp("plots") / "out"
    argv = ["run", "--methods", ",".join(METHODS), "--protocol", "setting1", "--datasets", "fashion_mnist",
            "--partitions", "0-5", "--scale", "smoke", "--executor", "local", "--out", str(out), "--cache", smoke_cache]
    command, sys.argv = sys.argv, ["/usr/local/bin/bench", *argv]  # the command line the records keep
    try:
        assert main(argv) == 0
    finally:
        sys.argv = command
    return out


def decoded_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel
        return image.size


PLOTS = {
    "roc": ["plot", "roc"],
    "scores": ["plot", "scores"],
    "scores-kde": ["plot", "scores", "--kind", "kde", "--methods", "energy,softmax"],
    "table3": ["plot", "table3"],
    "partitions": ["plot", "partitions", "--metric", "fpr95"],
}


@pytest.mark.parametrize("name", PLOTS)
def test_every_plot_of_stored_results_writes_a_png_and_an_svg(stored_run, tmp_path, name, capsys):
    import matplotlib.pyplot as plt

    output = tmp_path / f"{name}.png"
    assert main([*PLOTS[name], "--out", str(stored_run), "--output", str(output)]) == 0
    width, height = decoded_png(output.read_bytes())
    assert width > 300 and height > 200
    svg = output.with_suffix(".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert str(output) in capsys.readouterr().out
    assert plt.get_fignums() == []  # drawn outside pyplot: no figure left open, no display involved


def test_samples_draws_cmg_pseudo_ood_from_the_cached_cvae(stored_run, smoke_cache, tmp_path):
    output = tmp_path / "grid.svg"  # an .svg name also gives both files
    assert main(["plot", "samples", *TASK, "--cache", smoke_cache, "--count", "6", "--sigmas", "1,5",
                 "--output", str(output)]) == 0
    width, height = decoded_png(output.with_suffix(".png").read_bytes())
    assert width > height > 100  # 3 rows (ID test, sigma 1, sigma 5) of 6 images
    assert "σ = 5" in output.read_text()


def test_the_roc_area_equals_the_stored_auroc(stored_run):
    from bench.plots import roc_curves, task_scores

    store = ResultStore(stored_run)
    chosen = task_scores(store.frame(), store, str(stored_run))
    assert chosen.methods == sorted(METHODS) and chosen.ood_set == "unknown_classes"
    stored = {record["method"]: record["ood_sets"]["unknown_classes"]["auroc"] for record in store.latest()}
    for method, (fpr, tpr, area) in roc_curves(chosen).items():
        assert area == pytest.approx(stored[method], abs=1e-12)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert len(chosen.frame) == 3 * 1200 and chosen.frame["is_id"].sum() == 3 * 600


def test_the_roc_counts_the_non_ood_images_of_an_ood_set_as_id_as_the_metrics_do(stored_run, tmp_path):
    """As in SC-OOD, where part of an OOD set is ID-labelled; ties included."""
    from bench.plots import roc_curves, task_scores

    out = tmp_path / "out"
    shutil.copytree(stored_run, out)
    store = ResultStore(out)
    record = next(record for record in store.latest() if record["method"] == "energy")
    samples = store.samples(record)
    ood = samples["unknown_classes"]
    ood["is_ood"][:100] = False  # counted as ID
    ood["score"][100:200] = samples["id_test"]["score"][:100]  # ties across ID and OOD
    summary, per_set = metrics_from_samples(samples)
    store.write({**record, "metrics": summary, "ood_sets": per_set}, samples)

    chosen = task_scores(store.frame(), store, str(out), methods=["energy"])
    (_, _, area), = roc_curves(chosen).values()
    assert area == pytest.approx(per_set["unknown_classes"]["auroc"], abs=1e-12)
    assert chosen.frame["is_id"].sum() == 700 and chosen.stored_auroc["energy"] == per_set["unknown_classes"]["auroc"]


def test_the_html_report_holds_every_table_an_image_per_plot_and_the_provenance(stored_run, smoke_cache, tmp_path,
                                                                                 capsys):
    from bench.reports import cost_table, leaderboard, table1, table3, table_ood

    page = tmp_path / "report.html"
    assert main(["report", "--out", str(stored_run), "--cache", smoke_cache, "--html", str(page)]) == 0
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    store = ResultStore(stored_run)
    frame, per_set = store.frame(), store.frame(per_ood_set=True)
    for markdown in (table1(frame), table1(frame, "fpr95"), table3(frame), cost_table(frame), table_ood(per_set),
                     leaderboard(frame)):
        title, table = markdown.split("\n\n", 1)
        assert title.split(" — ")[0] in text
        for line in table.splitlines()[2:]:  # every cell of every row, as an HTML cell
            for cell in (cell.strip() for cell in line.strip("|").split("|")):
                assert f"<td>{cell}</td>" in text, cell
    assert text.count("<table>") == text.count("</table>") == 7  # six tables and the provenance
    # Table 2 (no fine-tuned method), MOODCAT's layout (one OOD set) and MOODCAT's samples (not run) do not apply
    assert len(re.findall(r'<p class="note">Left out: ', text)) == 3
    assert "no fine-tuned results" in text and "one OOD set" in text
    assert "no stored trial uses moodcat_generator" in text
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == text.count("<img") == 5  # partitions, table3, ROC, scores, CMG samples
    for data in images:
        decoded_png(base64.b64decode(data))
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # self-contained: nothing loaded from elsewhere
    record = store.latest()[0]
    assert record["provenance"]["git"] in text and "torch " + record["provenance"]["versions"]["torch"] in text
    assert "bench run --methods softmax,energy,cmg_e --protocol setting1" in text


def test_bad_selections_are_one_line_errors(stored_run, tmp_path, one_line_error):
    out = ["--out", str(stored_run), "--output", str(tmp_path / "figure.png")]
    assert "no stored results of nosuch" in one_line_error(["plot", "roc", *out, "--methods", "energy,nosuch"])
    assert "no stored results with partition 9-9" in one_line_error(["plot", "scores", *out, "--partition", "9-9"])
    assert "stored: 0" in one_line_error(["plot", "roc", *out, "--seed", "7"])
    assert "no OOD set 'svhn'" in one_line_error(["plot", "roc", *out, "--ood-set", "svhn"])
    assert "unknown --kind 'violin'" in one_line_error(["plot", "scores", *out, "--kind", "violin"])
    assert "unknown metric 'recall'" in one_line_error(["plot", "partitions", *out, "--metric", "recall"])
    assert "no stored results of dataset mnist" in one_line_error(["plot", "table3", *out, "--dataset", "mnist"])
    assert "name a .png file" in one_line_error(["plot", "roc", "--out", str(stored_run), "--output", "x.pdf"])
    assert "no results found" in one_line_error(["plot", "partitions", "--out", str(tmp_path), "--output",
                                                 str(tmp_path / "p.png")])
    assert "no results found" in one_line_error(["report", "--out", str(tmp_path), "--html", str(tmp_path / "r.html")])
    assert "invalid choice: 'pie'" in one_line_error(["plot", "pie"])
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.html"))


def test_samples_of_a_generator_not_cached_or_unknown_are_one_line_errors(tmp_path, one_line_error):
    argv = ["plot", "samples", *TASK, "--cache", str(tmp_path), "--output", str(tmp_path / "grid.png")]
    error = one_line_error([*argv, "--generator", "moodcat"])
    assert "no trained moodcat_generator" in error
    assert "`bench run --methods moodcat --protocol setting1 --datasets fashion_mnist --partitions 0-5 --seeds 0 " \
           "--scale smoke" in error
    assert "unknown generator 'gan'" in one_line_error([*argv, "--generator", "gan"])
    assert "sigmas must be > 0" in one_line_error([*argv, "--sigmas", "1,0"])


def test_results_without_stored_scores_are_a_one_line_error(stored_run, tmp_path, one_line_error):
    out = tmp_path / "out"
    shutil.copytree(stored_run, out)
    for path in (out / "trials").glob("*.json"):  # as an older version wrote them
        record = json.loads(path.read_text())
        if record["method"] == "softmax":
            del record["scores"]
            path.write_text(json.dumps(record))
    error = one_line_error(["plot", "roc", "--out", str(out), "--output", str(tmp_path / "roc.png")])
    assert "softmax on setting1/fashion_mnist/0-5 seed 0 (smoke) have no stored scores" in error
    assert main(["plot", "roc", "--out", str(out), "--methods", "energy,cmg_e", "--output",
                 str(tmp_path / "roc.png")]) == 0
    decoded_png((tmp_path / "roc.png").read_bytes())
