"""The fast CLI (issue 14): help, listings and tables import neither torch nor any method module.

Each command runs in a fresh interpreter, and what it imported is read from `sys.modules`. Listings
read `bench/registry_index.json`, which is used only while it matches the files it indexes; the first
test checks that it equals the index the registered entries give now.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import registry

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_DOWNLOAD": "0"}

# Runs bench.cli.main(argv) and prints, as the last line, its exit status and the heavy modules it imported.
RUN_CLI = """
import json, sys
from bench.cli import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as exit:  # --help
    status = exit.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "methods"))
print(json.dumps({"status": status, "heavy": heavy}))
"""

# Lists methods through the index at sys.argv[1]; prints the names, why the index is unusable, and whether torch loaded.
LIST_WITH_INDEX = """
import json, sys
from pathlib import Path
import bench.registry as registry
from bench.cli import LISTED
registry.INDEX = Path(sys.argv[1])
names = [name for name, _ in registry.listing(*LISTED["methods"])]
print(json.dumps({"names": names, "stale": registry.stale_index(), "torch": "torch" in sys.modules}))
"""


def python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=300)


def last_json(result: subprocess.CompletedProcess):
    """The JSON a script printed last."""
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_index_matches_the_registered_entries():
    result = subprocess.run([sys.executable, "-m", "bench.registry", "--check"], capture_output=True, text=True,
                            env=ENV, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("argv", [["list", "methods"], ["list", "protocols"], ["list", "models"], ["list", "datasets"],
                                  ["list", "recipes"], ["list", "recipes", "--scale", "demo"], ["--help"]])
def test_listing_and_help_import_neither_torch_nor_methods(argv):
    result = python(RUN_CLI, json.dumps(argv))
    report = last_json(result)
    assert report["status"] == 0, result.stderr
    assert report["heavy"] == [], f"{' '.join(argv)} imported {report['heavy'][:5]} (index: {registry.stale_index()})"
    listed = result.stdout.strip().splitlines()[:-1]
    assert len(listed) > 3


def test_listing_shows_what_the_entries_say():
    result = python(RUN_CLI, json.dumps(["list", "methods"]))
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[:-1]}
    assert lines["cmg_e"].endswith("[needs: classifier, cvae]")
    assert "CMG-e: energy fine-tuning of the head on class-mixed pseudo-OOD" in lines["cmg_e"]
    assert lines["moodcat"].endswith("[needs: classifier, moodcat_generator, moodcat_cb]")
    models = python(RUN_CLI, json.dumps(["list", "models"])).stdout
    assert any(line.startswith("moodcat_cb+svhn ") for line in models.splitlines())  # registered in a loop


def test_a_table_without_results_fails_in_one_line_without_torch(tmp_path):
    result = python(RUN_CLI, json.dumps(["table", "1", "--out", str(tmp_path)]))
    report = last_json(result)
    assert report["status"] == 2
    assert report["heavy"] == [], f"table imported {report['heavy'][:5]}"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("bench: error: no results found"), result.stderr


def test_getting_an_entry_imports_only_its_module():
    script = """
import json, sys
from bench.method import MethodSpec
MethodSpec("energy").build()
print(json.dumps(sorted(m for m in sys.modules if m.startswith("methods."))))
"""
    assert last_json(python(script)) == ["methods.energy"], registry.stale_index()


def test_the_index_is_used_only_while_it_matches_the_files(tmp_path):
    index = json.loads(registry.INDEX.read_text())
    index["registries"]["bench.method:METHODS"]["entries"]["ghost"] = {"module": "methods.ghost", "facts": {}}
    current = tmp_path / "current.json"
    current.write_text(json.dumps(index))
    report = last_json(python(LIST_WITH_INDEX, str(current)))
    assert report == {"names": report["names"], "stale": None, "torch": False} and "ghost" in report["names"]

    source = next(iter(index["sources"]))
    index["sources"][source] = "0" * 16  # as if the file had been edited since
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(index))
    report = last_json(python(LIST_WITH_INDEX, str(stale)))
    assert source in report["stale"] and report["torch"]  # read from the modules themselves
    assert "ghost" not in report["names"] and {"cmg_e", "energy", "softmax"} <= set(report["names"])
