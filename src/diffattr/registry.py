"""Registries by name, so config files and CLI flags name methods as the paper does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from diffattr.errors import DiffattrError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with a clear error for unknown names.

    >>> reg = Registry("pruner")
    >>> @reg.register("magnitude")
    ... def f(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise DiffattrError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
