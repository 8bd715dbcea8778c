"""File names made from identifiers that arrive in documents (run uids): never a path."""

from __future__ import annotations

import hashlib
import re

__all__ = ["safe_name"]

_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def safe_name(text: str) -> str:
    """``text`` if it is a plain file name (letters, digits, ``_ - .``, no leading dot, at most
    128 characters), else a SHA-256 of it: a uid from the network never names a path elsewhere.

    Parameters
    ----------
    text : str
        E.g. a run's uid.

    Returns
    -------
    str
        A name safe to join to a directory.
    """
    text = str(text)
    if _PLAIN.fullmatch(text):
        return text
    return "uid-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
