"""bench on an existing Ray cluster, and result stores and caches at fsspec URLs.

The cluster is started here with `ray.cluster_utils.Cluster`: a head that runs no job (0 CPUs)
and two worker nodes of one CPU each, each with its own BENCH_CACHE and BENCH_DATA pointing
nowhere, so that a job that read its own environment instead of the driver's paths would fail.
All three are processes of this machine; a folder only the driver can reach is a descriptor
of the driver's own (`/proc/self/fd/N`), which every other process, like a worker on another
machine, sees as nothing, so the refusal of such a folder comes from the nodes' own check.
"""
from __future__ import annotations

import os
import platform
import shutil
import tempfile

import pytest

from bench.cli import main
from bench.store import ModelCache, ResultStore

ray = pytest.importorskip("ray")

SMOKE = ["--methods", "softmax", "--protocol", "setting1", "--datasets", "fashion_mnist", "--partitions", "0-5",
         "--scale", "smoke"]


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPUs: it runs no job) and two worker nodes of 1 CPU, each with its own cache and data variables.

    Ray gets a temporary folder of its own (RAY_TMPDIR): a Cluster records its address in `<temp>/ray`, where
    any `ray.init()` on this machine would otherwise find and join it.
    """
    from ray.cluster_utils import Cluster

    saved = {name: os.environ.get(name) for name in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED", "RAY_ADDRESS")}
    temp = tempfile.mkdtemp(prefix="bench-ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    os.environ.update(RAY_TMPDIR=temp, RAY_USAGE_STATS_ENABLED="0")
    os.environ.pop("RAY_ADDRESS", None)
    started, here = None, os.getcwd()
    os.chdir(temp)  # the nodes' working folder (first on a worker's import path): not this checkout
    try:
        started = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for number in (1, 2):
            started.add_node(num_cpus=1, env_vars={"BENCH_CACHE": f"/nonexistent/node{number}/cache",
                                                   "BENCH_DATA": f"/nonexistent/node{number}/data"})
    except Exception as err:  # noqa: BLE001 - no Ray here: nothing below can run
        if started is not None:
            started.shutdown()
        pytest.skip(f"Ray cannot start a local cluster here: {err}")
    finally:
        os.chdir(here)
    head = started.head_node.node_id
    workers = {node.node_id for node in started.worker_nodes}
    try:
        yield started, head, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        started.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp, ignore_errors=True)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), captured.err
    return lines[0]


def test_a_run_on_the_cluster_uses_the_drivers_paths_and_the_driver_writes_the_records(cluster, tmp_path,
                                                                                        monkeypatch):
    started, head, workers = cluster
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("BENCH_CACHE", "cache")  # relative, and the nodes have their own: resolved on the driver
    monkeypatch.setenv("BENCH_DATA", "data")
    out = f"memory://{tmp_path.name}/out"  # in the driver's memory: a record written by a worker would be lost
    assert main(["run", *SMOKE, "--address", started.address, "--out", out]) == 0

    (record,) = ResultStore(out).records()
    node = record["provenance"]["ray_node"]
    assert node["id"] in workers and node["id"] != head  # the trial ran on a worker node, and says which
    assert record["provenance"]["host"] == platform.node()  # that node's host (here: this machine)
    assert record["provenance"]["command"] and record["provenance"]["git"]  # the driver's half
    assert 0 <= record["metrics"]["auroc"] <= 1 and record["metrics"]["accuracy"] > 0.5  # a trained classifier
    cache = ModelCache(tmp_path / "cache")  # the driver's BENCH_CACHE, made absolute on the driver
    (key,) = [entry.name for entry in (tmp_path / "cache" / "classifier").iterdir()]
    assert cache.meta("classifier", key)["provenance"]["ray_node"]["id"] in workers
    assert record["timing"]["shared_models"]["classifier"]["key"] == key

    @ray.remote(num_cpus=0)
    def where_bench_comes_from():
        import bench

        return bench.__file__

    from bench.runner import runtime_env

    ray.init(address=started.address, runtime_env=runtime_env(), logging_level="WARNING")
    try:  # the workers import the copy Ray uploaded, not this checkout
        assert "runtime_resources" in ray.get(where_bench_comes_from.remote())
    finally:
        ray.shutdown()


@pytest.mark.parametrize("option", ["--cache", "--data-root", "--cache memory"])
def test_b_a_folder_the_nodes_do_not_see_is_refused_by_their_check(cluster, tmp_path, capsys, option):
    started, head, workers = cluster
    driver_only = tmp_path / "driver-only"
    driver_only.mkdir()
    descriptor = os.open(driver_only, os.O_RDONLY)
    folder = f"/proc/self/fd/{descriptor}"  # this folder for the driver; nothing for any other process
    paths = {"--cache": str(tmp_path / "cache"), "--data-root": str(tmp_path)}
    if option == "--cache memory":
        option, folder = "--cache", f"memory://{tmp_path.name}/cache"  # lives in the driver's memory only
    paths[option] = folder
    try:
        line = _error(capsys, ["run", *SMOKE, "--address", started.address, "--out", str(tmp_path / "out"),
                               *(item for pair in paths.items() for item in pair)])
    finally:
        os.close(descriptor)
    what = "model cache" if option == "--cache" else "data root"
    assert f"the {what} {folder} does not exist on nodes" in line
    assert all(worker[:12] in line for worker in workers) and head[:12] not in line  # the nodes that run jobs
    assert not (tmp_path / "out" / "trials").exists() or not list((tmp_path / "out" / "trials").iterdir())
    assert not list(driver_only.iterdir())  # the driver's check file is gone again


@pytest.mark.parametrize("resources, expected", [
    (["--cpus-per-trial", "2"], "--cpus-per-trial 2 does not fit the largest node of the Ray cluster at {address} "
                                "(1 CPUs, 2 in all; a job runs on one node)"),
    (["--gpus-per-trial", "1"], "--gpus-per-trial 1 asks for a GPU but no node of the Ray cluster at {address} "
                                "has one"),
])
def test_c_a_job_bigger_than_the_largest_node_is_refused(cluster, tmp_path, capsys, monkeypatch, resources, expected):
    started, _, _ = cluster
    monkeypatch.setenv("RAY_ADDRESS", started.address)  # the same as --address
    line = _error(capsys, ["run", *SMOKE, *resources, "--out", str(tmp_path / "out"), "--cache", str(tmp_path)])
    assert expected.format(address=started.address) in line


def test_address_needs_the_ray_executor(capsys, tmp_path):
    line = _error(capsys, ["run", *SMOKE, "--executor", "local", "--address", "auto", "--out", str(tmp_path)])
    assert "--address auto needs --executor ray" in line


def test_a_result_store_and_a_cache_at_urls(tmp_path, monkeypatch):
    """`memory://` (fsspec) for --out and --cache, in-process: records and models written and read back as
    whole objects; the second run finds both."""
    monkeypatch.setenv("BENCH_FEATURE_CACHE", "0")  # the URL store of this test holds records and models only
    out, cache = f"memory://{tmp_path.name}/out", f"memory://{tmp_path.name}/cache"
    argv = ["run", *SMOKE, "--executor", "local", "--out", out, "--cache", cache]
    assert main(argv) == 0
    (record,) = ResultStore(out).records()
    models = ModelCache(cache)
    key = record["timing"]["shared_models"]["classifier"]["key"]
    assert models.has("classifier", key) and models.load_state("classifier", key)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())  # nothing on the local disk
    assert main(argv + ["--force"]) == 0  # runs the trial again from the cached model
    (again,) = ResultStore(out).records()
    assert again["metrics"] == record["metrics"] and again["provenance"]["finished"] >= record["provenance"]["finished"]
