"""A name -> object registry that refuses duplicates and lists what exists on a miss."""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

from atldas.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Registry of named objects (ops, search spaces, models, strategies).

    Example:
        >>> OPS = Registry("op")
        >>> @OPS.register("identity")
        ... def make_identity(): ...
        >>> OPS.get("identity")  # doctest: +ELLIPSIS
        <function make_identity at ...>
        >>> OPS.get("identiy")
        Traceback (most recent call last):
        ...
        atldas.errors.ConfigError: unknown op 'identiy'; known ops: identity
    """

    def __init__(self, kind: str, *, plural: str = "", check: Optional[Callable[[str, T], None]] = None) -> None:
        """``check(name, obj)``, when given, raises TypeError or ValueError for an object that cannot be
        registered (a function where a class belongs), at registration instead of at first use."""
        self.kind = kind
        self.plural = plural or kind + "s"
        self.check = check
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name raises ValueError."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"the {self.kind} name must be a non-empty string, got {name!r}")

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; a duplicate name raises ValueError, a name that is not a
        non-empty string TypeError."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"the {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.check is not None:
            self.check(name, obj)
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its object (a miss raises ConfigError listing the names)."""
        obj = self.get(name)
        del self._items[name]
        return obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; a miss raises ConfigError listing the names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
