"""One generic registry, used for methods, protocols, datasets and shared models.

Entries register themselves in their own module; the registry imports every module of
its package on first use, so no list of names is ever kept by hand.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

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
