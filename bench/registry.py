"""One generic registry, used for methods, protocols, datasets, shared models and recipe tables, and
the declared options of a registered dataclass.

Entries register themselves in their own module (`register_method("name", Cls)` at the bottom of
a file in `methods/`), so no list of names is ever kept by hand. A registry with `discover`
packages finds its entries by importing their modules, but only when an entry is used:

- `bench/registry_index.json`, written by `python -m bench.registry`, records for each registry
  that `bench list` shows (`bench.cli.LISTED`) every name, the module that registers it and what
  the listing shows of it. It is used only while every file of the discovered packages is
  byte-identical to when it was written (each file's hash is in it), so it cannot drift from the
  files: a file added, removed or edited makes the registries import every module again, as
  without an index (logged once). `tests/test_fast_cli.py` checks that it equals a fresh one.
- With a current index, `names()`, `in` and `listing` import nothing, and `get(name)` imports
  only the module that registers `name` (lm-evaluation-harness's lazy `module:object` entries,
  with the targets written by a program instead of by hand). `items()` imports every module.

An option is a dataclass field: its type comes from the annotation (int, float, bool, str,
`X | None`, `tuple[float, float]`, `Literal[...]`) and what it accepts beyond that is declared
next to it with `option(default, gt=, ge=, lt=, le=, choices=)`. `option_problem` checks a value
against both, so a bad option fails in one line before anything runs. (This module enters no
trial id or cache key, so its messages can change without re-running anything.)
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import numbers
import pkgutil
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Literal, TypeVar, Union

from bench.errors import BenchError

T = TypeVar("T")
log = logging.getLogger(__name__)

INDEX = Path(__file__).with_name("registry_index.json")
Facts = Callable[[str, Any], dict]  # (name, entry) -> what a listing shows of the entry, as JSON data


class Registry(Generic[T]):
    """Maps names to entries; `discover` names the package(s) whose modules register them."""

    def __init__(self, kind: str, discover: str | tuple[str, ...] | None = None):
        self.kind = kind
        self._packages = (discover,) if isinstance(discover, str) else tuple(discover or ())
        self._discovered = not self._packages
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # name -> the module of `discover` that registered it

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        module = self._registering_module()
        if module is not None:
            self._modules[name] = module
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    def _registering_module(self) -> str | None:
        """The innermost module of the discovered packages whose code is running (the one registering)."""
        frame = sys._getframe(2) if self._packages else None
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if any(module == package or module.startswith(f"{package}.") for package in self._packages):
                return module
            frame = frame.f_back
        return None

    def _indexed(self) -> dict[str, dict] | None:
        """{name: {"module", "facts"}} from the index while it is current and not every module is imported yet."""
        if self._discovered:
            return None
        sections = _current_index()
        if sections is None:
            return None
        return next((section["entries"] for section in sections.values() if section["kind"] == self.kind), None)

    def _load(self, name: str | None = None) -> None:
        """Import the module that registers `name`, or every module of the packages (name None, no current index)."""
        if self._discovered or (name is not None and name in self._entries):
            return
        indexed = self._indexed() if name is not None else None
        if indexed is not None:
            if name not in indexed:
                return  # the index is current: no module registers it
            importlib.import_module(indexed[name]["module"])
            if name in self._entries:
                return
        self._discovered = True
        for package_name in self._packages:
            package = importlib.import_module(package_name)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{module.name}")

    def get(self, name: str) -> T:
        self._load(name)
        if name not in self._entries:
            raise BenchError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"{self.kind} {name!r} is not implemented.{hint} Implemented: {', '.join(self.names())}."

    def names(self, pattern: str = "*") -> list[str]:
        indexed = self._indexed()
        if indexed is None:
            self._load()
        known = set(self._entries) | set(indexed or ())
        return sorted(n for n in known if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        if name in self._entries:
            return True
        indexed = self._indexed()
        if indexed is not None:
            return name in indexed
        self._load()
        return name in self._entries

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._entries.items()))


def resolve(target: str) -> Any:
    """The object a `module:object` target names, importing its module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _as_json(facts: dict) -> dict:
    """Facts as the index gives them back (lists for tuples), so that both ways of listing print the same."""
    return json.loads(json.dumps(facts))


def listing(home: str, facts: Facts) -> list[tuple[str, dict]]:
    """(name, facts(name, entry)) for every entry of the registry at `home` (`module:object`), sorted by name.

    While the index is current it is read from there, and neither the registry's module nor any entry's
    is imported (entries registered in this process from outside the packages are added). `facts` must be
    the function the index was written with (`bench.cli.LISTED`; the index check compares them).
    """
    module = home.partition(":")[0]
    sections = _current_index()
    if sections is None or home not in sections:
        return [(name, _as_json(facts(name, entry))) for name, entry in resolve(home).items()]
    listed = {name: item["facts"] for name, item in sections[home]["entries"].items()}
    if module in sys.modules:  # already imported here: add what this process registered beside the packages
        registry = resolve(home)
        listed.update((name, _as_json(facts(name, entry))) for name, entry in registry._entries.items()
                      if name not in registry._modules and name not in listed)
    return sorted(listed.items())


# --- the index: written by `python -m bench.registry`, used only while it matches the files --------------------

def _sources(packages: list[str]) -> dict[str, str]:
    """{path of every .py file of `packages`: hash of its bytes}, found without importing the packages."""
    hashes = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(folder).rglob("*.py")):
                name = f"{package.replace('.', '/')}/{path.relative_to(folder).as_posix()}"
                hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return hashes


def stale_index() -> str | None:
    """Why the index cannot be used (missing, unreadable, or a file of its packages changed), or None."""
    return _read_index()[1]


def _current_index() -> dict[str, dict] | None:
    """The index's registries by home while it is current, else None."""
    return _read_index()[0]


@functools.cache
def _read_index() -> tuple[dict[str, dict] | None, str | None]:
    """(registries by home, None) when the index matches the files, else (None, why); read once per process."""
    try:
        index = json.loads(INDEX.read_text())
        packages, sources, registries = index["packages"], index["sources"], index["registries"]
    except FileNotFoundError:
        problem = f"{INDEX} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{INDEX} cannot be read ({err})"
    else:
        now = _sources(packages)
        changed = sorted(name for name in now.keys() | sources.keys() if now.get(name) != sources.get(name))
        if not changed:
            return registries, None
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        problem = f"{INDEX.name} is out of date ({shown} changed since it was written)"
    log.warning("%s: every registered module is imported on first use; `python -m bench.registry` rewrites it",
                problem)
    return None, problem


def build_index(listed: dict[str, Facts]) -> dict:
    """The index of the registries at the homes (`module:object`) of `listed`, with what each home's facts
    function gives of every entry (imports every module)."""
    registries, packages = {}, set()
    for home, facts in listed.items():
        registry = resolve(home)
        entries = dict(registry.items())
        outside = sorted(set(entries) - set(registry._modules))
        if outside:
            raise RuntimeError(f"{home}: {', '.join(outside)} registered outside {', '.join(registry._packages)}; "
                               "build the index in a fresh process")
        packages.update(registry._packages)
        registries[home] = {"kind": registry.kind, "entries": {
            name: {"module": registry._modules[name], "facts": _as_json(facts(name, entry))}
            for name, entry in entries.items()}}
    packages = sorted(packages)
    return {"written_by": "python -m bench.registry (do not edit)", "packages": packages,
            "sources": _sources(packages), "registries": registries}


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between two indexes, in words: files, then entries."""
    def changes(prefix: str, before: dict, after: dict) -> list[str]:
        return [f"{prefix}{name}: {'added' if name not in before else 'removed' if name not in after else 'changed'}"
                for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)]

    lines = changes("", old.get("sources", {}), new["sources"])
    for home, section in new["registries"].items():
        lines += changes(f"{home} ", old.get("registries", {}).get(home, {}).get("entries", {}), section["entries"])
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.cli import LISTED  # the registries `bench list` shows, and what it shows of their entries
    from bench.store import write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m bench.registry",
                                     description=f"Rewrite {INDEX.name} from the registered entries (imports every "
                                     "module), or --check that it is current.")
    parser.add_argument("--check", action="store_true", help="only compare; exit status 1 when it differs")
    args = parser.parse_args(argv)
    index = build_index(dict(LISTED.values()))
    text = json.dumps(index, indent=1) + "\n"
    try:
        old_text = INDEX.read_text()
    except FileNotFoundError:
        old_text = "{}"
    if args.check:
        if old_text == text:
            print(f"{INDEX} is current")
            return 0
        try:
            old = json.loads(old_text)
        except ValueError:
            old = {}
        print(f"{INDEX} is out of date; `python -m bench.registry` rewrites it:", file=sys.stderr)
        for line in _differences(old, index) or ["(the order or layout only)"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    write_text_atomic(INDEX, text)
    INDEX.chmod(0o644)  # a source file like the others, not a private temporary one
    print(f"wrote {INDEX}: {sum(len(s['entries']) for s in index['registries'].values())} entries of "
          f"{len(index['registries'])} registries, {len(index['sources'])} files")
    return 0


@dataclasses.dataclass(frozen=True)
class Accepts:
    """What one option accepts beyond its annotated type: bounds (gt: >, ge: >=, lt: <, le: <=) and/or choices."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None

    def admits(self, number) -> bool:
        return ((self.gt is None or number > self.gt) and (self.ge is None or number >= self.ge)
                and (self.lt is None or number < self.lt) and (self.le is None or number <= self.le))

    def bounds(self) -> str:
        """'> 0', '>= 1', 'in (0, 100]', or '' without bounds."""
        low = self.gt if self.gt is not None else self.ge
        high = self.lt if self.lt is not None else self.le
        if low is not None and high is not None:
            return f"in {'(' if self.gt is not None else '['}{low:g}, {high:g}{')' if self.lt is not None else ']'}"
        if low is not None:
            return f"{'>' if self.gt is not None else '>='} {low:g}"
        if high is not None:
            return f"{'<' if self.lt is not None else '<='} {high:g}"
        return ""


def option(default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, choices=None) -> Any:
    """A dataclass field with what it accepts declared beside it: `sigma: float = option(5.0, gt=0)`."""
    accepts = Accepts(gt, ge, lt, le, tuple(choices) if choices is not None else None)
    return dataclasses.field(default=default, metadata={"accepts": accepts})


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _rule(annotation, accepts: Accepts, default: Any = None) -> tuple[str, Callable[[Any], bool]]:
    """(what the option accepts, in words; a test of a value) for an annotation and its declared range."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"option type {annotation} is not supported; use X or X | None")
        words, test = _rule(inner[0], accepts, default)
        return f"{words}, or None", lambda value: value is None or test(value)
    if origin is Literal:
        return _rule(type(args[0]), dataclasses.replace(accepts, choices=args), default)
    if accepts.choices is not None:
        choices = accepts.choices
        return (f"one of {', '.join(map(str, choices))}",
                lambda value: any(type(value) is type(choice) and value == choice for choice in choices))
    if annotation is bool:
        return "True or False", lambda value: isinstance(value, bool)
    if annotation is int:
        return (" ".join(filter(None, ["an integer", accepts.bounds()])),
                lambda value: isinstance(value, numbers.Integral) and not isinstance(value, bool) and accepts.admits(value))
    if annotation is float:
        return (" ".join(filter(None, ["a number", accepts.bounds()])),
                lambda value: _is_number(value) and (isinstance(value, numbers.Integral) or math.isfinite(value))
                and accepts.admits(value))
    if annotation is str:
        return "non-empty text", lambda value: isinstance(value, str) and value != ""
    if origin is tuple and args and Ellipsis not in args:
        items = [_rule(arg, accepts) for arg in args]
        words = items[0][0] if len({w for w, _ in items}) == 1 else "; ".join(w for w, _ in items)
        example = f", e.g. ({','.join(f'{v:g}' for v in default)})" if isinstance(default, tuple) else ""
        return (f"{len(args)} values in parentheses, each {words}{example}",
                lambda value: isinstance(value, tuple) and len(value) == len(items)
                and all(test(item) for (_, test), item in zip(items, value)))
    raise TypeError(f"option type {annotation} is not supported")


@functools.cache
def option_rules(cls: type) -> dict[str, tuple[str, Callable[[Any], bool]]]:
    """{option name: (what it accepts, in words; a test of a value)} for every init field of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {field.name: _rule(hints[field.name], field.metadata.get("accepts", Accepts()), field.default)
            for field in dataclasses.fields(cls) if field.init}


def option_problem(cls: type, name: str, value: Any) -> str | None:
    """None if `value` suits option `name` of dataclass `cls`, else e.g. 'sigma must be a number > 0 (got -5)'."""
    words, test = option_rules(cls)[name]
    return None if test(value) else f"{name} must be {words} (got {value!r})"


if __name__ == "__main__":
    from bench.registry import main as _main  # the module the registries use, not this `__main__` copy

    sys.exit(_main())
