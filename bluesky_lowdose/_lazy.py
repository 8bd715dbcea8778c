"""Module-level ``__getattr__``/``__dir__`` that import heavy submodules on first use (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, table: dict[str, str], exported: list[str]) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package`` that import ``table[name]`` on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    table : dict
        Attribute name -> submodule (relative to the package) that defines it.
    exported : list of str
        The package's ``__all__``.

    Returns
    -------
    tuple of callable
        ``(__getattr__, __dir__)`` to assign in the package's namespace.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            namespace[name] = value  # cache: later lookups do not come here
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exported))

    return __getattr__, __dir__
