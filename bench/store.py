"""On-disk state: the content-addressed model cache and the per-trial result store.

Each lives in a folder (`Storage`): a local path, or an fsspec URL (`s3://bucket/x`,
`gs://...`, `memory://x`; `file://` is a local path). Local folders are written atomically
(a temporary name, then `os.replace`), so a run killed at any moment leaves either the old
state or the new one, never half a file, and hand out file locks (a `.locks/` folder in
each), so that runs sharing a store and a cache train each model and run each trial once.
A URL folder writes every file as one whole object (atomic on object stores) and has no
locks: concurrent runs on one URL are not locked against each other (a model or trial may
be computed twice; every file stays whole, and a model's `meta.json` is written last).
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import importlib.util
import inspect
import io
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
                         if _is_module(node.module) and _is_module(f"{node.module}.{alias.name}"))
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


def write_atomic(path: Path, write: Callable[[Any], Any], mode: str = "w") -> None:
    """Write via a temporary file and a rename, so readers never see half a file; `write(handle)` fills it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text))


def _json(payload: Any) -> str:
    return json.dumps(payload, indent=1, sort_keys=True, default=str)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, _json(payload))


def _lock(folder: Path, name: str) -> FileLock:
    """An inter-process lock (flock: the system releases it when its holder dies, even by kill -9)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f"{name}.lock")


class NoLock:
    """What a URL folder hands out for a lock: acquiring it never waits (see the module docstring)."""

    def acquire(self, timeout: float | None = None, **_) -> "NoLock":
        return self

    def release(self, **_) -> None:
        pass

    def __enter__(self) -> "NoLock":
        return self

    def __exit__(self, *_) -> None:
        pass


def is_url(where: str | os.PathLike) -> bool:
    """Whether `where` names a folder through fsspec (`s3://bucket/x`, `memory://x`) rather than a local path."""
    text = str(where)
    return "://" in text and not text.startswith("file://")


def resolve(where: str | os.PathLike) -> str:
    """`where` as every process of a run must read it: a URL as given; a local path (or a `file://` URL) made
    absolute in this process, with `~` expanded (symbolic links are kept: other machines may mount them elsewhere)."""
    text = str(where)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return text if is_url(text) else os.path.abspath(os.path.expanduser(text))


def cache_location(explicit: str | os.PathLike | None = None) -> str:
    """The model cache a run uses: `--cache`, then $BENCH_CACHE, then ~/.cache/bench/models, resolved here."""
    return resolve(explicit or os.environ.get("BENCH_CACHE") or DEFAULT_CACHE)


class Storage:
    """A folder given as a local path or an fsspec URL, with the few file operations the cache and the store use.

    `path(*parts)` is a `Path` in a local folder and a URL string otherwise; the other methods take the same
    parts. Local writes go through a temporary name and a rename; a URL gets each file as one whole object.
    """

    def __init__(self, where: str | os.PathLike):
        where = str(where)
        if where.startswith("file://"):
            where = where[len("file://"):]
        if is_url(where):
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(where)
            self.root: Path | str = where.rstrip("/")
        else:
            self.fs, self.root = None, Path(where).expanduser()

    @property
    def local(self) -> bool:
        return self.fs is None

    def path(self, *parts: str) -> Path | str:
        return self.root.joinpath(*parts) if self.local else "/".join([self.root, *parts])

    def exists(self, *parts: str) -> bool:
        return self.path(*parts).exists() if self.local else self.fs.exists(self.path(*parts))

    def is_file(self, *parts: str) -> bool:
        return self.path(*parts).is_file() if self.local else self.fs.isfile(self.path(*parts))

    def is_dir(self, *parts: str) -> bool:
        return self.path(*parts).is_dir() if self.local else self.fs.isdir(self.path(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        return self.path(*parts).read_bytes() if self.local else self.fs.cat_file(self.path(*parts))

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def write_text(self, *parts: str, text: str) -> Path | str:
        """Write a whole file: via a temporary name and a rename locally, as one object at a URL."""
        return self.write_bytes(*parts, data=text.encode())

    def write_bytes(self, *parts: str, data: bytes) -> Path | str:
        """Write a whole file: via a temporary name and a rename locally, as one object at a URL."""
        path = self.path(*parts)
        if self.local:
            write_atomic(path, lambda handle: handle.write(data), mode="wb")
        else:
            self.fs.pipe_file(path, data)
        return path

    def remove(self, *parts: str) -> None:
        """Delete a file if it is there."""
        path = self.path(*parts)
        if self.local:
            path.unlink(missing_ok=True)
        elif self.fs.exists(path):
            self.fs.rm_file(path)

    def glob(self, folder: str, pattern: str) -> list[Path | str]:
        """The files in `folder` whose names match `pattern`, sorted."""
        if self.local:
            return sorted(self.path(folder).glob(pattern))
        found = self.fs.glob(f"{self.path(folder)}/{pattern}")
        return sorted(f"{self.path(folder)}/{name.rsplit('/', 1)[-1]}" for name in found)

    def modified(self, *parts: str) -> datetime.datetime | None:
        """When a file was last written (UTC), or None where the filesystem does not say."""
        if self.local:
            return datetime.datetime.fromtimestamp(self.path(*parts).stat().st_mtime, datetime.timezone.utc)
        try:
            stamp = self.fs.modified(self.path(*parts))
        except (NotImplementedError, OSError):
            return None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.timezone.utc)

    def lock(self, name: str) -> FileLock | NoLock:
        """An inter-process lock in `.locks/` of a local folder; a URL folder has none (NoLock)."""
        return _lock(self.root / ".locks", name) if self.local else NoLock()

    def ensure_writable(self, what: str) -> None:
        """Create the folder and prove a file can be written there, or say in one line which folder to fix."""
        if self.local:
            ensure_writable(self.root, what)
            return
        probe = f".write-check-{os.getpid()}-{id(self):x}"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(self.path(probe), b"")
            self.fs.rm_file(self.path(probe))
        except Exception as err:  # noqa: BLE001 - each fsspec backend raises its own types (auth, network, ...)
            reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise BenchError(f"cannot write the {what} to {self.root} ({type(err).__name__}: {reason}); "
                             "choose a writable folder or URL") from None


class ModelCache:
    """Trained shared models, one folder per (kind, key) holding `model.pt` and `meta.json`.

    `root` is a local path or an fsspec URL (`Storage`); default $BENCH_CACHE, else ~/.cache/bench/models.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.storage = Storage(root or os.environ.get("BENCH_CACHE") or DEFAULT_CACHE)
        self.root = self.storage.root

    def folder(self, kind: str, key: str) -> Path | str:
        return self.storage.path(kind, key)

    def has(self, kind: str, key: str) -> bool:
        return self.storage.is_file(kind, key, "meta.json")

    def lock(self, kind: str, key: str) -> FileLock | NoLock:
        """Held around check-train-save of one model, so concurrent runs train it once (locally; see Storage)."""
        return self.storage.lock(f"{kind}-{key}")

    def saved_at(self, kind: str, key: str) -> datetime.datetime | None:
        """When the model was saved (its meta.json written), or None where the storage does not say."""
        return self.storage.modified(kind, key, "meta.json")

    def save(self, kind: str, key: str, state: dict, meta: dict) -> None:
        import torch

        if not self.storage.local:  # whole objects, meta.json last: `has` is true only once the weights are there
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.storage.fs.pipe_file(self.storage.path(kind, key, "model.pt"), buffer.getvalue())
            self.storage.write_text(kind, key, "meta.json", text=json.dumps(meta, indent=1, sort_keys=True, default=str))
            return
        final = self.folder(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
        torch.save(state, staging / "model.pt")
        write_json_atomic(staging / "meta.json", meta)
        if final.exists():  # a stale or corrupt entry that is being replaced on purpose
            shutil.rmtree(final)
        os.replace(staging, final)

    def meta(self, kind: str, key: str) -> dict:
        try:
            return json.loads(self.storage.read_text(kind, key, "meta.json"))
        except (OSError, ValueError) as err:
            raise self._corrupt(kind, key, err) from None

    def load_state(self, kind: str, key: str) -> dict:
        import torch

        try:
            source = self.folder(kind, key) / "model.pt" if self.storage.local else io.BytesIO(
                self.storage.read_bytes(kind, key, "model.pt"))
            return torch.load(source, map_location="cpu", weights_only=True)
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


SAMPLE_COLUMNS = ("score", "label", "target", "is_ood")


def _samples_npz(samples: dict) -> bytes:
    """Per-image results as one compressed npz: a column per field, `set` indexing the names in `sets`."""
    import numpy as np

    names = list(samples)
    columns = {
        "sets": np.array(names),
        "set": np.concatenate([np.full(len(samples[name]["score"]), index, dtype=np.int16)
                               for index, name in enumerate(names)]),
        "score": np.concatenate([np.asarray(samples[name]["score"], dtype=np.float32) for name in names]),
        "label": np.concatenate([np.asarray(samples[name]["label"], dtype=np.int32) for name in names]),
        "target": np.concatenate([np.asarray(samples[name]["target"], dtype=np.int32) for name in names]),
        "is_ood": np.concatenate([np.asarray(samples[name]["is_ood"], dtype=bool) for name in names]),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **columns)
    return buffer.getvalue()


def _overrides(record: dict) -> str:
    """The recipe overrides that reached this trial ('' for the scale's own recipe)."""
    return record.get("recipe", {}).get("overrides", "")


def _aux(record: dict) -> str | None:
    """The auxiliary outlier set the trial's models trained on (None: none)."""
    return (record.get("aux") or {}).get("dataset")


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
        self.storage = Storage(out)
        self.out = self.storage.root
        self.trials = self.storage.path("trials")
        self.failed = self.storage.path("failed")

    def ensure_writable(self) -> None:
        if self.storage.local:
            ensure_writable(self.trials, "results")
        else:
            Storage(self.trials).ensure_writable("results")

    def path(self, trial_id: str) -> Path | str:
        return self.storage.path("trials", f"{trial_id}.json")

    def failure_path(self, trial_id: str) -> Path | str:
        return self.storage.path("failed", f"{trial_id}.json")

    def has(self, trial_id: str) -> bool:
        """Whether the trial has a usable result; a damaged file does not count (the trial runs again)."""
        try:
            return record_problem(json.loads(self.storage.read_text("trials", f"{trial_id}.json"))) is None
        except (OSError, ValueError):
            return False

    def lock(self, trial_id: str) -> FileLock | NoLock:
        """Held while a trial runs, so concurrent runs on one store never run it twice at once (locally; see Storage)."""
        return self.storage.lock(trial_id)

    def write(self, record: dict, samples: dict | None = None) -> Path | str:
        """Write a trial's record, and first its per-image results (`samples`, see `scores`), so a record never
        names a file that is not there."""
        if samples:
            data = _samples_npz(samples)
            self.storage.write_bytes("scores", f"{record['trial_id']}.npz", data=data)
            record = {**record, "scores": {"file": f"scores/{record['trial_id']}.npz", "bytes": len(data),
                                           "images": sum(len(sample["score"]) for sample in samples.values())}}
        path = self.storage.write_text("trials", f"{record['trial_id']}.json", text=_json(record))
        self.storage.remove("failed", f"{record['trial_id']}.json")  # the trial has succeeded after all
        return path

    def samples(self, record: dict) -> dict | None:
        """A record's per-image results as `bench.metrics.metrics_from_samples` takes them (None: not stored)."""
        if not record.get("scores"):
            return None
        import numpy as np

        with np.load(io.BytesIO(self.storage.read_bytes(*record["scores"]["file"].split("/")))) as arrays:
            columns = {name: arrays[name] for name in arrays.files}
        samples = {}
        for index, name in enumerate(columns["sets"]):
            rows = columns["set"] == index
            samples[str(name)] = {column: columns[column][rows] for column in SAMPLE_COLUMNS}
        return samples

    def scores(self, **where):
        """Per-image results of the newest records (optionally those whose fields equal `where`, e.g. method="energy"),
        one row per (trial, test set, image): trial and task fields, `set`, `score`, `label`, `target`, `is_ood`."""
        import pandas as pd

        frames = []
        for record in self.latest():
            if any(record.get(key) != value for key, value in where.items()):
                continue
            samples = self.samples(record)
            for name, sample in (samples or {}).items():
                frame = pd.DataFrame(sample)
                frame.insert(0, "set", name)
                for key in reversed(("trial_id", *IDENTITY)):
                    frame.insert(0, key, record[key])
                frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_failure(self, record: dict) -> Path | str:
        return self.storage.write_text("failed", f"{record['trial_id']}.json", text=_json(record))

    def _load(self, path: Path | str):
        return json.loads(path.read_text() if isinstance(path, Path) else self.storage.fs.cat_file(path).decode())

    def failures(self) -> list[dict]:
        """The failed records (a failed record that cannot be read is skipped with a warning)."""
        failures = []
        for path in self.storage.glob("failed", "*.json"):
            try:
                failures.append(self._load(path))
            except (OSError, ValueError) as err:
                log.warning("skipping failed-trial file %s (%s); delete it", path, err)
        return failures

    def records(self) -> list[dict]:
        """Every stored record; a file that holds no record (`{}`, a list) is skipped with a warning."""
        return [record for _, record in self._read(complete=False)]

    def _read(self, complete: bool) -> list[tuple[Path, dict]]:
        found = []
        for path in self.storage.glob("trials", "*.json"):
            try:
                record = self._load(path)
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
        """One record per (protocol, dataset, partition, seed, method, scale, overrides, aux set): the newest.

        Editing a method's code gives its trials new ids; the older records stay on disk
        but no longer count in tables. A record that lacks what tables read is skipped with a warning.
        """
        newest: dict[tuple, dict] = {}
        for _, record in self._read(complete=True):
            identity = (*(record[key] for key in IDENTITY), _overrides(record), _aux(record))
            if identity not in newest or record["provenance"]["finished"] > newest[identity]["provenance"]["finished"]:
                newest[identity] = record
        return list(newest.values())

    def recomputed(self, record: dict) -> dict:
        """The record with its metrics recomputed from its stored per-image results; a BenchError when it has none
        or they disagree with the stored metrics (a damaged or edited file)."""
        from bench.metrics import metrics_from_samples

        samples = self.samples(record)
        if samples is None:
            raise BenchError(f"trial {record['trial_id']} ({record['method']} on {record['protocol']}/{record['dataset']}/"
                             f"{record['partition']}) has no stored scores (written by an older version); re-run it "
                             "with --force, or leave out --recompute")
        summary, per_set = metrics_from_samples(samples)
        if summary != record["metrics"] or per_set != record["ood_sets"]:
            raise BenchError(f"the stored scores of trial {record['trial_id']} do not give its stored metrics; its files "
                             f"in {self.out} were changed or damaged: re-run it with --force")
        return {**record, "metrics": summary, "ood_sets": per_set}

    def frame(self, per_ood_set: bool = False, recompute: bool = False, params: bool = False):
        """The newest records as a pandas DataFrame: one row per trial, or per (trial, OOD set). With `recompute`, the
        metrics are computed again from each trial's stored scores (and must equal the stored ones); with `params`,
        each method parameter is a column `param.<name>` (a value that is no number, text or bool as its repr)."""
        import pandas as pd

        rows = []
        for record in self.latest():
            if recompute:
                record = self.recomputed(record)
            base = {"trial_id": record["trial_id"], "data_key": record.get("data_key"),
                    **{key: record[key] for key in IDENTITY}, "overrides": _overrides(record), "aux": _aux(record),
                    "recipe_tables": tuple(record.get("recipe", {}).get("tables", ())),
                    "family": record.get("recipe", {}).get("family")}
            base.update(record["timing"]["summary"])
            if params:
                base.update({f"param.{name}": value if value is None or isinstance(value, (bool, int, float, str))
                             else repr(value) for name, value in record.get("method_params", {}).items()})
            if per_ood_set:
                for ood_set, metrics in record.get("ood_sets", {}).items():  # records before 98a7a3a have none
                    rows.append({**base, "ood_set": ood_set, **metrics, "accuracy": record["metrics"]["accuracy"]})
            else:
                rows.append({**base, **record["metrics"]})
        return pd.DataFrame(rows)
