"""On-disk state: the content-addressed model cache and the per-trial result store.

Both write atomically (a temporary name, then `os.replace`), so a run killed at any
moment leaves either the old state or the new one, never half a file. Both hand out
file locks (a `.locks/` folder in each), so that runs sharing a store and a cache train
each model and run each trial once.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from bench.errors import BenchError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/bench/models")


def content_key(parts: dict) -> str:
    """A stable hash of everything that went into an artefact."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


# Modules that never compute a number of a model or a trial: orchestration, storage, reports,
# registries and the data layer (data enters keys by its description: dataset, split, classes,
# preprocessing). An import of one of these ends the walk in `code_hash`, so editing them keeps
# every cached model and stored trial.
NOT_NUMERIC = ("bench.runner", "bench.cli", "bench.store", "bench.reports", "bench.registry", "bench.shared",
               "bench.recipes", "bench.provenance", "bench.errors", "bench.protocol", "bench.data",
               "bench.datasets", "bench.preprocess", "bench.evaluation", "bench.nets", "bench.shared_models",
               "protocols", "methods", "bench")
PROJECT_PACKAGES = ("bench", "methods", "protocols")


def _numeric(module: str) -> bool:
    return module not in NOT_NUMERIC and not module.startswith(("bench.datasets.", "protocols."))


def _imported_modules(name: str) -> set[str]:
    """Project modules that module `name` imports anywhere in its source (inside functions too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(importlib.import_module(name)))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from package import submodule` imports a module, not an attribute
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if importlib.util.find_spec(node.module) and _is_module(f"{node.module}.{alias.name}"))
    return {module for module in found if module.split(".")[0] in PROJECT_PACKAGES}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def code_closure(*roots: str) -> tuple[str, ...]:
    """`roots` and every project module they import, transitively, except those in NOT_NUMERIC."""
    seen, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(module for module in _imported_modules(name) if _numeric(module))
    return tuple(sorted(seen))


def _code_of(module_name: str) -> str:
    """A module's code as its syntax tree: comments and layout left out, and so are its recipe tables.

    A recipe table's entries reach a key through the recipe part a procedure reads from it, so
    setting another scale's entry, like a comment, retrains nothing.
    """
    import ast

    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    tree.body = [node for node in tree.body if not (
        isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", None) == "RecipeTable")]
    return ast.dump(tree)


@functools.lru_cache(maxsize=None)
def source_hash(*module_names: str) -> str:
    """Hash of the code of these modules, independent of their names (a moved file keeps its hash)."""
    digests = sorted(hashlib.sha256(_code_of(name).encode()).hexdigest() for name in set(module_names))
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def code_hash(*roots: str) -> str:
    """Hash of exactly the code that computes a model's or a trial's numbers: `roots` and their project imports."""
    return source_hash(*code_closure(*roots))


def ensure_writable(folder: Path, what: str) -> Path:
    """Create `folder` and prove a file can be written there, or say which folder to fix."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise BenchError(f"cannot write the {what} to {folder} ({err.strerror}); choose a writable folder") from None
    return folder


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True, default=str))


def _lock(folder: Path, name: str) -> FileLock:
    """An inter-process lock (flock: the system releases it when its holder dies, even by kill -9)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{name}.lock")


class ModelCache:
    """Trained shared models, one folder per (kind, key) holding `model.pt` and `meta.json`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or os.environ.get("BENCH_CACHE") or DEFAULT_CACHE).expanduser()

    def folder(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        return (self.folder(kind, key) / "meta.json").is_file()

    def lock(self, kind: str, key: str) -> FileLock:
        """Held around check-train-save of one model, so concurrent runs train it once."""
        return _lock(self.root / ".locks", f"{kind}-{key}")

    def save(self, kind: str, key: str, state: dict, meta: dict) -> None:
        import torch

        final = self.folder(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        torch.save(state, staging / "model.pt")
        write_json_atomic(staging / "meta.json", meta)
        if final.exists():  # a stale or corrupt entry that is being replaced on purpose
            shutil.rmtree(final)
        os.replace(staging, final)

    def meta(self, kind: str, key: str) -> dict:
        path = self.folder(kind, key) / "meta.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise self._corrupt(kind, key, err) from None

    def load_state(self, kind: str, key: str) -> dict:
        import torch

        try:
            return torch.load(self.folder(kind, key) / "model.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a damaged file
            raise self._corrupt(kind, key, err) from None

    def load_module(self, kind: str, key: str, build: Callable[[], Any]):
        """Build an empty module with `build` and fill it with the cached weights."""
        module = build()
        try:
            module.load_state_dict(self.load_state(kind, key))
        except RuntimeError as err:  # shapes or names that do not fit the architecture
            raise self._corrupt(kind, key, err) from None
        return module

    def _corrupt(self, kind: str, key: str, err: Exception) -> BenchError:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return BenchError(
            f"cache entry {self.folder(kind, key)} is corrupt ({reason[:120]}); "
            f"delete that folder and run again, or pass --retrain"
        )


IDENTITY = ("protocol", "dataset", "partition", "seed", "method", "scale")
# What a record needs to count in tables, beside IDENTITY: key -> the type its value must have.
COUNTED = {"trial_id": str, "metrics": dict, "timing": dict, "provenance": dict}


def _overrides(record: dict) -> str:
    """The recipe overrides that reached this trial ('' for the scale's own recipe)."""
    return record.get("recipe", {}).get("overrides", "")


def record_problem(record: Any, complete: bool = True) -> str | None:
    """Why `record` is not a result record (None: it is); `complete=False` asks only for a JSON object with a trial id."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not a record"
    wanted = COUNTED if complete else {"trial_id": str}
    missing = [key for key in (*wanted, *(IDENTITY if complete else ())) if key not in record]
    if missing:
        return f"it lacks {', '.join(missing)}"
    wrong = [key for key, kind in wanted.items() if not isinstance(record[key], kind)]
    if complete:
        wrong += [f"{outer}.{inner}" for outer, inner, kind in (("timing", "summary", dict), ("provenance", "finished", str))
                  if not isinstance(record[outer].get(inner), kind)]
        wrong += [] if isinstance(record.get("recipe", {}), dict) else ["recipe"]
    return f"its {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} missing or of the wrong type" if wrong else None


class ResultStore:
    """One JSON record per finished trial under `<out>/trials/`; one per failed trial under `<out>/failed/`.

    Failed records never count in tables, and a trial with only a failed record runs again
    on the next `bench run`; its success deletes the failed record.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out).expanduser()
        self.trials = self.out / "trials"
        self.failed = self.out / "failed"

    def ensure_writable(self) -> None:
        ensure_writable(self.trials, "results")

    def path(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}.json"

    def failure_path(self, trial_id: str) -> Path:
        return self.failed / f"{trial_id}.json"

    def has(self, trial_id: str) -> bool:
        """Whether the trial has a usable result; a damaged file does not count (the trial runs again)."""
        try:
            return record_problem(json.loads(self.path(trial_id).read_text())) is None
        except (OSError, ValueError):
            return False

    def lock(self, trial_id: str) -> FileLock:
        """Held while a trial runs, so concurrent runs on one store never run it twice at once."""
        return _lock(self.out / ".locks", trial_id)

    def write(self, record: dict) -> Path:
        path = self.path(record["trial_id"])
        write_json_atomic(path, record)
        self.failure_path(record["trial_id"]).unlink(missing_ok=True)  # the trial has succeeded after all
        return path

    def write_failure(self, record: dict) -> Path:
        path = self.failure_path(record["trial_id"])
        write_json_atomic(path, record)
        return path

    def failures(self) -> list[dict]:
        """The failed records (a failed record that cannot be read is skipped with a warning)."""
        failures = []
        for path in sorted(self.failed.glob("*.json")):
            try:
                failures.append(json.loads(path.read_text()))
            except (OSError, ValueError) as err:
                log.warning("skipping failed-trial file %s (%s); delete it", path, err)
        return failures

    def records(self) -> list[dict]:
        """Every stored record; a file that holds no record (`{}`, a list) is skipped with a warning."""
        return [record for _, record in self._read(complete=False)]

    def _read(self, complete: bool) -> list[tuple[Path, dict]]:
        found = []
        for path in sorted(self.trials.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise BenchError(f"result file {path} is unreadable ({err}); delete it and re-run that trial") from None
            problem = record_problem(record, complete)
            if problem:
                log.warning("skipping result file %s: %s; delete it (its trial runs again on the next `bench run`)",
                            path, problem)
            else:
                found.append((path, record))
        return found

    def latest(self) -> list[dict]:
        """One record per (protocol, dataset, partition, seed, method, scale, overrides): the newest.

        Editing a method's code gives its trials new ids; the older records stay on disk
        but no longer count in tables. A record that lacks what tables read is skipped with a warning.
        """
        newest: dict[tuple, dict] = {}
        for _, record in self._read(complete=True):
            identity = (*(record[key] for key in IDENTITY), _overrides(record))
            if identity not in newest or record["provenance"]["finished"] > newest[identity]["provenance"]["finished"]:
                newest[identity] = record
        return list(newest.values())

    def frame(self, per_ood_set: bool = False):
        """The newest records as a pandas DataFrame: one row per trial, or per (trial, OOD set)."""
        import pandas as pd

        rows = []
        for record in self.latest():
            base = {"trial_id": record["trial_id"], "data_key": record.get("data_key"),
                    **{key: record[key] for key in IDENTITY}, "overrides": _overrides(record),
                    "recipe_tables": tuple(record.get("recipe", {}).get("tables", ())),
                    "family": record.get("recipe", {}).get("family")}
            base.update(record["timing"]["summary"])
            if per_ood_set:
                for ood_set, metrics in record.get("ood_sets", {}).items():  # records before 98a7a3a have none
                    rows.append({**base, "ood_set": ood_set, **metrics, "accuracy": record["metrics"]["accuracy"]})
            else:
                rows.append({**base, **record["metrics"]})
        return pd.DataFrame(rows)
