"""Progress bars: drawn only for a user at a terminal, never in pipes, files or CI logs."""
from __future__ import annotations

import os
import subprocess
import sys

from bench import progress


def test_bars_are_off_unless_asked_for_and_never_change_what_is_iterated(monkeypatch, capsys):
    items = [1, 2, 3]
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    assert progress.steps(items, desc="x") is items
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert list(progress.steps(iter(items), total=3, desc="counting")) == items
    assert "counting" in capsys.readouterr().err
    with progress.counter(2, "jobs") as bar:
        bar.update(2)
    assert "2/2" in capsys.readouterr().err


def test_a_run_whose_output_is_not_a_terminal_prints_no_bar(tmp_path, smoke_cache):
    env = {key: value for key, value in os.environ.items() if key != "BENCH_PROGRESS"}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--methods", "softmax", "--protocol", "setting1", "--datasets",
         "fashion_mnist", "--partitions", "0-5", "--scale", "smoke", "--executor", "local", "--out",
         str(tmp_path / "out"), "--cache", smoke_cache],
        capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "trials to run" in output and "AUROC" in output  # the log lines and the table are there
    assert "\r" not in output and "batch/s" not in output and "job/s" not in output
