"""What can be combined: backend modes, workloads and faults, as declarative registries.

No I/O here. Each item says what it needs and validates itself against the others
(``supports``), so the campaign config holds no cross-rules by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from ..errors import ConfigError


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """An ordered, read-only mapping of items by name (iterating gives the names, like a dict);
    an unknown name is a ConfigError naming the choices."""

    def __init__(self, kind: str, items: tuple[T, ...]):
        self.kind = kind
        self._items = {i.name: i for i in items}
        if len(self._items) != len(items):
            raise ValueError(f"duplicate {kind} names")

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}", hint="choose one of: " + ", ".join(self._items)) \
                from None

    def names(self) -> list[str]:
        return list(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def describe(self, width: int = 13) -> str:
        return "\n".join(f"  {i.name:{width}} {i.summary}" for i in self.values())
