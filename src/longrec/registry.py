"""Name -> implementation registries; a miss lists the known names."""

from __future__ import annotations

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

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
