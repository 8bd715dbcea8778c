"""Argument types shared by the ``lowdose-tomo`` subcommands (argparse turns their errors into
a usage line and exit status 2: no traceback)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "method", "port", "positive_float"]


def count(minimum: int) -> Callable[[str], int]:
    """An integer type that must be ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """A positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 1 ... 65535."""
    value = count(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 ... 65535, got {value}")
    return value


def method(text: str) -> str:
    """``auto`` or one of the pipeline's methods."""
    from .pipeline import METHODS

    if text != "auto" and text not in METHODS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose auto or one of {', '.join(METHODS)}")
    return text
