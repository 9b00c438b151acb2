"""benchmarks/cells.py: one `bench run` per (seed, partition) cell, with a start deadline."""
import subprocess
import sys

import pytest

@pytest.fixture(scope="module")
def cells(benchmark_script):
    return benchmark_script("cells")


def test_each_cell_runs_locally_on_its_own_seed_and_partition(cells):
    command = cells.cell_command("3", "1-6", ["--methods", "osrci", "--scale", "demo"], cpus=2)
    assert command[1:] == ["-m", "bench", "run", "--methods", "osrci", "--scale", "demo", "--seeds", "3",
                           "--partitions", "1-6", "--executor", "local", "--cpus-per-trial", "2"]
    given = cells.cell_command("0", "0-5", ["--cpus-per-trial", "4"], cpus=2)
    assert given.count("--cpus-per-trial") == 1 and given[given.index("--cpus-per-trial") + 1] == "4"


def run_script(cells, tmp_path, *args):
    return subprocess.run([sys.executable, cells.__file__, "--logs", str(tmp_path / "logs"), *args],
                          capture_output=True, text=True, cwd=tmp_path)


def test_cells_past_the_deadline_are_reported_and_fail_the_run(cells, tmp_path):
    done = run_script(cells, tmp_path, "--deadline-s", "0", "--seeds", "0,1", "--partitions", "0-5", "--",
                      "--methods", "softmax")
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["seed 0 0-5: not started, 0.0 min", "seed 1 0-5: not started, 0.0 min"]


def test_a_failing_cell_is_reported_with_its_exit_status(cells, tmp_path):
    done = run_script(cells, tmp_path, "--seeds", "0", "--partitions", "0-5", "--", "--methods", "no_such_method",
                      "--protocol", "setting1", "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stdout.startswith("seed 0 0-5: exit 2,")
    assert "no_such_method" in (tmp_path / "logs" / "s0_0-5.log").read_text()


def test_no_workers_is_a_usage_error(cells, tmp_path):
    done = run_script(cells, tmp_path, "--workers", "0", "--seeds", "0", "--partitions", "0-5")
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr.splitlines()[-1]


def test_points_become_recipes_in_the_order_given(cells):
    assert cells.parse_points(["v64=classifier.epochs=32,cvae.epochs=64", "v128=cvae.epochs=128"]) == [
        ("v64", ["--recipe", "classifier.epochs=32,cvae.epochs=64"]), ("v128", ["--recipe", "cvae.epochs=128"])]
    assert cells.parse_points([]) == [("", [])]


def test_each_point_of_a_cell_runs_and_reports_on_its_own(cells, tmp_path):
    done = run_script(cells, tmp_path, "--seeds", "0", "--partitions", "0-5", "--point", "a=classifier.epochs=1",
                      "--point", "b=classifier.epochs=2", "--", "--methods", "no_such_method", "--protocol",
                      "setting1", "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert [line.split(",")[0] for line in lines] == ["seed 0 0-5 a: exit 2", "seed 0 0-5 b: exit 2"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["s0_0-5_a.log", "s0_0-5_b.log"]


def test_points_past_the_deadline_are_each_reported(cells, tmp_path):
    done = run_script(cells, tmp_path, "--deadline-s", "0", "--seeds", "0", "--partitions", "0-5",
                      "--point", "a=x=1", "--point", "b=x=2")
    assert done.stdout.splitlines() == ["seed 0 0-5 a: not started, 0.0 min", "seed 0 0-5 b: not started, 0.0 min"]


@pytest.mark.parametrize("args, message", [
    (["--point", "nothing"], "--point takes NAME=OVERRIDES"),
    (["--point", "a=x=1", "--", "--recipe", "x=2"], "either with --point or after --"),
])
def test_bad_points_are_usage_errors(cells, tmp_path, args, message):
    done = run_script(cells, tmp_path, "--seeds", "0", "--partitions", "0-5", *args)
    assert done.returncode == 2 and message in done.stderr.splitlines()[-1]
