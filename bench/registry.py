"""One generic registry, used for methods, protocols, datasets and shared models, and the
declared options of a registered dataclass.

Entries register themselves in their own module; the registry imports every module of
its package on first use, so no list of names is ever kept by hand.

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
import importlib
import math
import numbers
import pkgutil
import types
import typing
from typing import Any, Callable, Generic, Iterator, Literal, TypeVar, Union

from bench.errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries; `discover` names the package whose modules register them."""

    def __init__(self, kind: str, discover: str | None = None):
        self.kind = kind
        self._discover = discover
        self._discovered = discover is None
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    def _load(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self._discover)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._discover}.{module.name}")

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise BenchError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"{self.kind} {name!r} is not implemented.{hint} Implemented: {', '.join(self.names())}."

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._entries.items()))


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
