"""The command line: listing, reports, and a one-line error with exit status 2 for every bad input."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from bench.cli import main
from bench.store import ResultStore

SMOKE = ["--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5", "--scale", "smoke",
         "--executor", "local"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A smoke run of softmax and cmg_e, written to a result folder the report tests read."""
    root = tmp_path_factory.mktemp("cli")
    out, cache = root / "out", root / "cache"
    os.environ["BENCH_DOWNLOAD"] = "0"
    assert main(["run", "--methods", "softmax,cmg_e", *SMOKE, "--out", str(out), "--cache", str(cache)]) == 0
    return out, cache


def test_run_prints_table1(finished_run, capsys):
    out, cache = finished_run
    assert main(["run", "--methods", "softmax,cmg_e", *SMOKE, "--out", str(out), "--cache", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "Table 1: AUROC" in printed and "| fashion_mnist (setting1)" in printed
    assert printed.index("softmax") < printed.index("cmg_e")


def test_run_prints_only_its_own_seeds_and_partitions(finished_run, capsys, tmp_path):
    out, cache = finished_run
    store = tmp_path / "out"
    shutil.copytree(out, store)  # seed 0 is already there: the table must not average it in
    assert main(["run", "--methods", "softmax", *SMOKE, "--seeds", "1", "--out", str(store), "--cache", str(cache)]) == 0
    printed = capsys.readouterr().out
    frame = ResultStore(store).frame()
    softmax = frame[frame["method"] == "softmax"].set_index("seed")["auroc"]
    assert sorted(softmax.index) == [0, 1]
    row = next(line for line in printed.splitlines() if line.startswith("| fashion_mnist (setting1)"))
    assert f"| {softmax[1] * 100:.1f} " in row + " "
    assert "(1 partitions x 1 seeds)" in printed


def test_table_and_leaderboard_read_the_store(finished_run, capsys, tmp_path):
    out, _ = finished_run
    assert main(["table", "1", "--out", str(out), "--metric", "fpr95"]) == 0
    assert "Table 1: FPR95" in capsys.readouterr().out
    assert main(["table", "3", "--out", str(out)]) == 0
    assert "execution time" in capsys.readouterr().out
    board = tmp_path / "board.md"
    assert main(["leaderboard", "--out", str(out), "--output", str(board)]) == 0
    text = board.read_text()
    assert "rank" in text.splitlines()[2] and "| cmg_e " in text and "| softmax " in text


def test_list_commands(capsys):
    assert main(["list", "methods"]) == 0
    listed = capsys.readouterr().out
    for name in ("softmax", "energy", "cmg_s", "cmg_e", "cmg_e_direct", "cmg_e_unfrozen", "cmg_e_no_pseudo"):
        assert f"\n{name} " in f"\n{listed}"
    assert main(["list", "protocols"]) == 0
    assert "setting1" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out


def test_an_unknown_method_is_reported_with_the_implemented_ones(one_line_error):
    line = one_line_error(["run", "--methods", "cmg_e,moodcats", "--protocol", "setting1"])
    assert "'moodcats' is not implemented" in line and "Did you mean" in line and "moodcat" in line
    assert "softmax" in line


@pytest.mark.parametrize("argv, expected", [
    (["run", "--methods", "softmx", "--protocol", "setting1"], "Did you mean softmax"),
    (["run", "--methods", "softmax", "--protocol", "setting9"], "protocol 'setting9' is not implemented"),
    (["run", "--methods", "softmax", "--protocol", "setting1", "--datasets", "imagenet"], "has no dataset 'imagenet'"),
    (["run", "--methods", "softmax", "--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-6"],
     "has no partition '0-6'"),
    (["run", "--methods", "cmg_e[sigma]", "--protocol", "setting1"], "needs the form key=value"),
    (["run", "--methods", "cmg_e[sigmaa=2]", "--protocol", "setting1"], "has no parameter sigmaa"),
    (["run", "--methods", "softmax", "--protocol", "setting1", "--scale", "huge"], "unknown scale 'huge'"),
    (["table", "9"], "table 9 is not available"),
    (["run", "--methods", "softmax", *SMOKE[:-2], "--executor", "slurm"], "unknown executor 'slurm'"),
    (["run", "--methods", "softmax", *SMOKE, "--cpus-per-trial", "64"], "does not fit this machine"),
])
def test_bad_input_is_one_line(one_line_error, argv, expected):
    assert expected in one_line_error(argv)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpu_fraction_without_a_gpu(one_line_error):
    assert "none is visible" in one_line_error(["run", "--methods", "softmax", *SMOKE, "--gpus-per-trial", "0.25"])


def test_missing_dataset_names_the_folder(one_line_error, tmp_path):
    line = one_line_error(["run", "--methods", "softmax", "--protocol", "setting1", "--datasets", "mnist",
                           "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "--executor", "local"])
    assert str(tmp_path / "MNIST" / "raw") in line


def test_unwritable_output_folder(one_line_error, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(["run", "--methods", "softmax", *SMOKE, "--out", str(blocker / "out")])
    assert "cannot write the results" in line and str(blocker / "out") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_output_folder(one_line_error, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    line = one_line_error(["run", "--methods", "softmax", *SMOKE, "--out", str(locked / "out")])
    assert "cannot write the results" in line


def test_corrupt_cache_entry(finished_run, capsys, tmp_path):
    _, cache = finished_run
    damaged = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(cache), str(damaged)], check=True)
    model_file = next((damaged / "classifier").glob("*/model.pt"))
    model_file.write_bytes(b"not a checkpoint")
    # A trial that cannot load its model is a failed trial: exit status 1, one line on it, no traceback.
    assert main(["run", "--methods", "softmax", *SMOKE, "--out", str(tmp_path / "out"), "--cache", str(damaged)]) == 1
    captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if line.startswith("  ")]
    assert "softmax  BenchError: cache entry" in line and "is corrupt" in line and str(model_file.parent) in line
    assert "Traceback" not in captured.err


def test_empty_store_says_how_to_fill_it(one_line_error, tmp_path):
    assert "no results found" in one_line_error(["table", "1", "--out", str(tmp_path)])


def test_python_dash_m_entry_point_and_exit_status(tmp_path):
    """The real process: exit status 2 and no traceback for a bad method."""
    result = subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "nosuch", "--protocol", "setting1"],
                            capture_output=True, text=True, env={**os.environ, "BENCH_DOWNLOAD": "0"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "nosuch" in result.stderr
