"""The thread-determinism check (benchmarks/thread_determinism.py): one setting reproduces itself to the bit."""
import pytest


@pytest.fixture(scope="module")
def thread_determinism(benchmark_script):
    return benchmark_script("thread_determinism")


def test_one_setting_run_twice_gives_the_same_weights(thread_determinism, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["thread_determinism.py", "--threads", "1,1", "--steps", "2"])
    thread_determinism.main()
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 2
    assert rows[0][3] == rows[1][3] and [float(row[4]) for row in rows] == [0.0, 0.0]  # weights hash, difference
