"""Input validation shared by the enhancer, the training and the baselines (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TrainingError", "as_frames", "check_positive_int"]


class TrainingError(RuntimeError):
    """Training failed in a way that retrying with the same settings will not fix (e.g. a NaN loss)."""


def as_frames(data: Any, name: str, *, allow_single: bool = True) -> tuple[np.ndarray, bool]:
    """Validate image data and return it as a stack of frames.

    Parameters
    ----------
    data : array_like
        One frame ``(H, W)`` (when ``allow_single``) or a stack ``(N, H, W)`` of real numbers.
    name : str
        Name used in error messages.
    allow_single : bool
        Accept a single 2-D frame.

    Returns
    -------
    frames : numpy.ndarray
        ``(N, H, W)`` view or copy of the data (dtype unchanged, integer or floating).
    single : bool
        True when a single 2-D frame was given.

    Raises
    ------
    TypeError
        Not an array of real numbers (complex, bool, object, strings).
    ValueError
        Wrong number of dimensions, empty, or non-finite values.
    """
    if isinstance(data, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {type(data).__name__}")
    arr = np.asarray(data)
    real = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    if arr.dtype == bool or not real:
        raise TypeError(f"{name} must hold real numbers (integer or floating dtype), got dtype {arr.dtype}")
    allowed = (2, 3) if allow_single else (3,)
    if arr.ndim not in allowed:
        shape_text = "(H, W) or (N, H, W)" if allow_single else "(N, H, W)"
        raise ValueError(f"{name} must have shape {shape_text}, got {arr.ndim}-D shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    single = arr.ndim == 2
    frames = arr[None] if single else arr
    if np.issubdtype(frames.dtype, np.floating):
        # Checked frame by frame: a stack may be large and np.isfinite(arr) would copy all of it.
        for i, frame in enumerate(frames):
            if not np.isfinite(frame).all():
                where = "" if single else f" (frame {i})"
                raise ValueError(f"{name} contains NaN or infinite values{where}")
    return frames, single


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer ``>= minimum``.

    Parameters
    ----------
    value : Any
        The value to check.
    name : str
        Name used in error messages.
    minimum : int
        Smallest allowed value.

    Returns
    -------
    int
        The value.

    Raises
    ------
    TypeError
        Not an integer.
    ValueError
        Smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
