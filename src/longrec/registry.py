"""Name -> implementation registries; a miss lists the known names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from longrec.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    config: type[Any] | None  # the dataclass of its options, or None


class Registry(Generic[T]):
    """A named table of implementations (mixers, datasets, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, obj: T, config: type[Any] | None = None) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[name] = Entry(name, obj, config)
        return obj

    def get(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        return self._entries[name]

    def pick(self, name: str, field: str) -> Entry[T]:
        """get() for the config field that names the entry: a miss names the field and lists the choices."""
        if name not in self._entries:
            raise ConfigError(f"config: '{field}' must be one of {', '.join(self.listed())}, got {name!r}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def listed(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """Names in registration order (the default first), only those whose object passes `where` if given."""
        return [n for n, e in self._entries.items() if where is None or where(e.obj)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
