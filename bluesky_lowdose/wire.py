"""Documents on the 0MQ wire as msgpack, never pickle.

bluesky's ``Publisher`` and ``RemoteDispatcher`` default to ``pickle``: anything that can write to
the proxy's input port could then run code in the enhancer service. These two functions are the
``serializer``/``deserializer`` both ends use instead. Arrays travel as dtype, shape and raw bytes;
object arrays (whose only encoding is pickle) are refused on both ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WireError", "pack", "unpack"]

_ARRAY = "__lowdose_ndarray__"


class WireError(ValueError):
    """A message that is not a document this package can read."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise WireError("object arrays cannot be sent (their only encoding is pickle)")
        return {_ARRAY: True, "dtype": obj.dtype.str, "shape": list(obj.shape),
                "data": np.ascontiguousarray(obj).tobytes()}  # fmt: skip
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} in a document")


def _decode(obj: dict) -> Any:
    if obj.get(_ARRAY) is not True:
        return obj
    try:
        dtype = np.dtype(obj["dtype"])
        if dtype.hasobject:
            raise WireError("an object array arrived: refused (its only encoding is pickle)")
        return np.frombuffer(obj["data"], dtype=dtype).reshape(obj["shape"]).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"a malformed array: {exc}") from None


def pack(doc: dict) -> bytes:
    """``Publisher(serializer=pack)``: a document as msgpack bytes.

    Parameters
    ----------
    doc : dict
        A bluesky document (numpy arrays and scalars allowed).

    Returns
    -------
    bytes
        The message body.
    """
    import msgpack

    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def unpack(data: bytes) -> dict:
    """``RemoteDispatcher(deserializer=unpack)``: a document from msgpack bytes.

    Parameters
    ----------
    data : bytes
        The message body.

    Returns
    -------
    dict
        The document.

    Raises
    ------
    WireError
        Not msgpack (e.g. a pickle), not a mapping, or a malformed or object array.
    """
    import msgpack

    try:
        doc = msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several types for data that is not msgpack
        raise WireError(f"not a msgpack document ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise WireError(f"a document must be a mapping, got {type(doc).__name__}")
    return doc
