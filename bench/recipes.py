"""Recipes: what a run's scale fixes for one task, the shared shape of a training stage, and overrides.

A scale names a purpose:
- smoke: seconds on a CPU, for tests (subsets of the data, one or two epochs);
- demo: a whole Fashion-MNIST Setting 1 run in minutes on 2 CPU cores; its models are
  under-trained, so its numbers show that things run, not which method is better;
- (not yet) a CPU reference, trained until one more doubling of training no longer changes
  the comparison: `benchmarks/convergence.py` searches for it with `--recipe` overrides, and
  has not found it yet (BENCHMARKS.md, convergence study);
- paper: the papers' backbones and schedules (SPEC.md sections 3-6), for GPUs.

`Recipe` holds only what every model and trial of a task shares: the scale, the image
family, the data limits, whether the dataset's classifier is trained with crop+flip, and
the user's overrides. Each training procedure (a file in `bench/shared_models/`) and each
method with a training stage of its own keeps its per-scale settings in a named
`RecipeTable` in its own file and reads its entry with `recipe.pick(TABLE)`; that entry,
overrides applied, and not the whole recipe, enters its cache key.
"""
from __future__ import annotations

import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from bench.errors import BenchError
from bench.registry import Registry

SCALES = ("smoke", "demo", "paper")

# Data limits per scale: (ID training images, images per test set); None = all.
LIMITS = {"smoke": (2000, 600), "demo": (None, None), "paper": (None, None)}

# Tables are made by the modules of the shared models and methods that train with them.
RECIPE_TABLES: Registry["RecipeTable"] = Registry("recipe table", discover=("bench.shared_models", "methods"))


class RecipeTable:
    """One procedure's settings per scale, keyed by (image family, scale) or by scale alone.

    Its `name` is what `--recipe <name>.<field>=<value>` overrides.
    """

    def __init__(self, name: str, entries: Mapping):
        self.name = name
        self.entries = dict(entries)
        RECIPE_TABLES.register(name, self)

    def entry(self, family: str, scale: str) -> Any:
        for key in ((family, scale), scale):
            if key in self.entries:
                return self.entries[key]
        raise BenchError(f"no {scale} recipe for {family} images in the {self.name!r} recipe table")

    def entry_type(self) -> type:
        return type(next(iter(self.entries.values())))


def require(owner: Any, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
            fraction: tuple[str, ...] = (), choices: Mapping[str, tuple] | None = None) -> None:
    """Range checks for a recipe dataclass's `__post_init__`: a bad override fails before anything runs."""
    for name in positive:
        value = getattr(owner, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 (got {value!r})")
    for name in non_negative:
        if not getattr(owner, name) >= 0:
            raise ValueError(f"{name} must be >= 0 (got {getattr(owner, name)!r})")
    for name in fraction:
        if not 0 < getattr(owner, name) < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1 (got {getattr(owner, name)!r})")
    for name, allowed in (choices or {}).items():
        if getattr(owner, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))} (got {getattr(owner, name)!r})")


@dataclass(frozen=True)
class Stage:
    """How one network is trained by minibatch descent on the ID training set."""

    arch: str | None  # backbone name (bench.nets.backbones) or a procedure's own architecture name
    width: int | None  # channel width (None: the architecture's default)
    epochs: int
    batch_size: int
    lr: float
    augment: bool = False
    optimizer: str = "adam"  # adam | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 0  # linear warm-up of the learning rate
    cosine: bool = False  # cosine decay to 0 after the warm-up

    def __post_init__(self):
        require(self, positive=("width", "epochs", "batch_size", "lr"),
                non_negative=("weight_decay", "momentum", "warmup_epochs"), choices={"optimizer": ("adam", "sgd")})


@dataclass(frozen=True)
class Override:
    """`table.field[.field...] = value`: one recipe setting replaced for a run."""

    table: str
    path: tuple[str, ...]
    value: Any

    @property
    def name(self) -> str:
        return ".".join((self.table, *self.path))

    def __str__(self) -> str:
        return f"{self.name}={_text(self.value)}"

    def changes(self, family: str, scale: str) -> bool:
        """Whether this override sets a value other than the table's own at this scale."""
        try:
            value = RECIPE_TABLES.get(self.table).entry(family, scale)
        except BenchError:
            return True
        for name in self.path:
            value = getattr(value, name, None)
        return value != self.value


@dataclass(frozen=True)
class Recipe:
    scale: str
    family: str  # "gray28" (28x28 grayscale) or "colour" (32x32 / 64x64 RGB)
    train_limit: int | None = None
    test_limit: int | None = None
    augment: bool = False  # crop + flip for the classifier (the dataset's choice, e.g. CIFAR)
    overrides: tuple[Override, ...] = ()
    # Names of the tables picked so far, when a caller asks (`tables_read`); not part of the recipe.
    trace: list | None = field(default=None, compare=False, repr=False)

    def pick(self, table: RecipeTable, **dataset_choices) -> Any:
        """This recipe's entry of `table`: the dataset's own choices (e.g. augment), then the overrides."""
        if self.trace is not None:
            self.trace.append(table.name)
        entry = table.entry(self.family, self.scale)
        if dataset_choices:
            entry = replace(entry, **dataset_choices)
        mine = [o for o in self.overrides if o.table == table.name]
        return _apply(entry, mine) if mine else entry

    def tables_read(self, *part_functions) -> list[str]:
        """The recipe tables the given recipe-part functions read: which overrides can touch them."""
        traced = replace(self, trace=[])
        for part in part_functions:
            part(traced)
        return sorted(set(traced.trace))

    def narrowed(self, *part_functions) -> tuple["Recipe", list[str]]:
        """This recipe with only the overrides that change the given recipe parts, and the tables they read.

        A trial or model is then labelled only by the overrides that can change its numbers: one
        that sets a value the recipe already has, or a table it does not read, is dropped.
        """
        tables = self.tables_read(*part_functions)
        reached = [o for o in self.overrides if o.table in tables]

        def parts(overrides) -> list | None:
            probe = replace(self, overrides=tuple(overrides))
            try:
                return [describe_part(part(probe)) for part in part_functions]
            except BenchError:  # invalid without the dropped override (a field checked against it): it matters
                return None

        full = parts(reached)
        effective = tuple(o for o in reached if parts(x for x in reached if x is not o) != full)
        return replace(self, overrides=effective), tables

    def check(self) -> None:
        """Apply every override once, so a bad value fails before anything runs."""
        for name in {o.table for o in self.overrides}:
            self.pick(RECIPE_TABLES.get(name))

    def describe(self) -> dict:
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("overrides", "trace")}
        return {**plain, "overrides": overrides_text(self.overrides)}


def _apply(entry: Any, overrides: list[Override], depth: int = 0) -> Any:
    """`entry` with every override set at once: fields checked against each other (MCD's
    pretrain_epochs below stage.epochs) are checked after all of them are set, in any order."""
    changes = {}
    for head in dict.fromkeys(o.path[depth] for o in overrides):
        here = [o for o in overrides if o.path[depth] == head]
        nested = [o for o in here if len(o.path) > depth + 1]
        value = getattr(entry, head)
        for override in here:
            if len(override.path) == depth + 1:
                value = override.value
        if nested:
            if value is None:
                raise BenchError(f"--recipe {nested[0]}: {'.'.join(nested[0].path[:depth + 1])} is not used at this "
                                 f"scale, so it has no {'.'.join(nested[0].path[depth + 1:])} to set")
            value = _apply(value, nested, depth + 1)
        changes[head] = value
    try:
        return replace(entry, **changes)
    except ValueError as err:
        raise BenchError(f"--recipe {overrides_text(overrides)}: {err}") from None


def overrides_text(overrides) -> str:
    """The canonical spelling of a set of overrides ('' for none): the same for flags and a file."""
    return ",".join(sorted(str(o) for o in overrides))


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def image_family(image_shape: tuple[int, int, int]) -> str:
    channels, height, _ = image_shape
    return "gray28" if channels == 1 and height <= 28 else "colour"


def recipe_for(scale: str, image_shape: tuple[int, int, int], augment: bool = False,
               overrides: tuple[Override, ...] = ()) -> Recipe:
    """The recipe for a dataset of `image_shape`; `augment` turns on crop+flip for the classifier."""
    if scale not in SCALES:
        hint = {"small": " (the old 'small' scale is now 'demo')",
                "reference": " (no CPU reference recipe is chosen yet: see the convergence study in BENCHMARKS.md; "
                             "use --scale demo with --recipe overrides)"}.get(scale, "")
        raise BenchError(f"unknown scale {scale!r}{hint}; choose one of {', '.join(SCALES)}")
    train_limit, test_limit = LIMITS[scale]
    return Recipe(scale, image_family(image_shape), train_limit, test_limit, augment, tuple(overrides))


def flat_fields(entry: Any, prefix: str = "") -> dict[str, str]:
    """An entry's fields as dotted names and their values as `--recipe` spells them."""
    flat = {}
    for item in fields(entry):
        value, name = getattr(entry, item.name), f"{prefix}{item.name}"
        flat.update(flat_fields(value, f"{name}.") if is_dataclass(value) else {name: _text(value)})
    return flat


def describe_part(part: Any) -> Any:
    """A recipe part as plain data for keys and records (dataclasses become dicts, also inside dicts)."""
    if is_dataclass(part):
        return asdict(part)
    if isinstance(part, dict):
        return {key: describe_part(value) for key, value in part.items()}
    return part


# --- overrides from the command line and from TOML files ----------------------------------------

def parse_overrides(specs: list[str]) -> tuple[Override, ...]:
    """`--recipe` values, in order, later ones winning: `a.b=v,c.d=w` lists, or paths of TOML files.

    Each name is checked against the registered recipe tables and each value against the
    field's type; ranges are checked when a table's entry is built with it.
    """
    raw: dict[str, Any] = {}
    for spec in specs:
        if spec.endswith(".toml") or Path(spec).is_file():
            raw.update(_read_toml(Path(spec)))
            continue
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise BenchError(f"--recipe {item!r}: write <table>.<field>=<value>, e.g. classifier.epochs=30")
            raw[name.strip()] = value.strip()
    return tuple(_resolve(name, value) for name, value in raw.items())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"recipe file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise BenchError(f"recipe file {path} is not valid TOML ({err})") from None

    def flatten(prefix: str, value: Any):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from flatten(f"{prefix}.{key}" if prefix else key, inner)
        else:
            yield prefix, value

    return dict(flatten("", data))


def _resolve(name: str, value: Any) -> Override:
    table_name, *path = name.split(".")
    if table_name not in RECIPE_TABLES:
        raise BenchError(f"--recipe {name}: {RECIPE_TABLES.unknown_message(table_name)}")
    if not path:
        raise BenchError(f"--recipe {name}: name a field of the {table_name!r} table, e.g. "
                         f"{table_name}.{fields(RECIPE_TABLES.get(table_name).entry_type())[0].name}=...")
    owner = RECIPE_TABLES.get(table_name).entry_type()
    for depth, part in enumerate(path):
        hints = typing.get_type_hints(owner)
        if part not in hints:
            known = ", ".join(f.name for f in fields(owner))
            raise BenchError(f"--recipe {name}: {'.'.join([table_name, *path[:depth]])} has no field {part!r}; "
                             f"its fields: {known}")
        hint = hints[part]
        if depth < len(path) - 1:
            nested = [t for t in typing.get_args(hint) or (hint,) if is_dataclass(t)]
            if not nested:
                raise BenchError(f"--recipe {name}: {part} is a value, not a group of fields")
            owner = nested[0]
    return Override(table_name, tuple(path), _coerce(value, hint, name))


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` (text from a flag, or a TOML value) as the field's type, or a one-line error."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    for kind in (t for t in options if t is not type(None)):
        try:
            return _as(value, kind)
        except (TypeError, ValueError):
            continue
    accepted = " or ".join(getattr(t, "__name__", str(t)).replace("NoneType", "none") for t in options)
    raise BenchError(f"--recipe {name}={_text(value) if not isinstance(value, str) else value}: expected {accepted}")


def _as(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError
    if kind is int:
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    if kind is str:
        if not isinstance(value, str) or not value:
            raise TypeError
        return value
    raise TypeError
