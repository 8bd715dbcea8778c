"""Overlapping patch extraction, augmentation and weighted reassembly (numpy only)."""

from __future__ import annotations

import numpy as np

from ._checks import check_positive_int

__all__ = ["dihedral", "extract_patches", "patch_grid", "patch_starts", "reassemble_patches"]


def patch_starts(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Start offsets of patches along one axis, the last one flush with the edge.

    Parameters
    ----------
    length : int
        Length of the axis.
    patch_size : int
        Patch length (``<= length``).
    stride : int
        Step between patches (>= 1).

    Returns
    -------
    numpy.ndarray
        Increasing int64 offsets; every pixel of the axis is covered at least once.

    Raises
    ------
    ValueError
        The axis is shorter than a patch, or a non-positive size/stride.
    """
    length = check_positive_int(length, "length")
    patch_size = check_positive_int(patch_size, "patch_size")
    stride = check_positive_int(stride, "stride")
    if patch_size > length:
        raise ValueError(f"patch_size {patch_size} is larger than the frame axis ({length} pixels)")
    starts = np.arange(0, length - patch_size + 1, stride, dtype=np.int64)
    if starts[-1] + patch_size < length:
        starts = np.append(starts, length - patch_size)
    return starts


def patch_grid(shape: tuple[int, int], patch_size: int, stride: int) -> np.ndarray:
    """Top-left corners of the patches covering a frame.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the frame.
    patch_size : int
        Edge of the square patches.
    stride : int
        Step between patches along both axes.

    Returns
    -------
    numpy.ndarray
        ``(n_patches, 2)`` int64 array of ``(row, column)`` corners, row-major.
    """
    rows = patch_starts(shape[0], patch_size, stride)
    cols = patch_starts(shape[1], patch_size, stride)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def extract_patches(
    image: np.ndarray, patch_size: int, stride: int, *, dtype: type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a frame into overlapping square patches.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` frame.
    patch_size : int
        Edge of the patches (``<= min(H, W)``).
    stride : int
        Step between patches; the last patch of each axis is flush with the edge, so every pixel
        is covered whatever the stride.
    dtype : type, optional
        Output dtype (default: the image's).

    Returns
    -------
    patches : numpy.ndarray
        ``(n_patches, patch_size, patch_size)`` copies.
    corners : numpy.ndarray
        ``(n_patches, 2)`` top-left corners, for :func:`reassemble_patches`.

    Raises
    ------
    ValueError
        Not a 2-D frame, or a frame smaller than a patch.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"extract_patches needs a 2-D frame, got shape {image.shape}")
    corners = patch_grid(image.shape, patch_size, stride)
    view = np.lib.stride_tricks.sliding_window_view(image, (patch_size, patch_size))
    patches = view[corners[:, 0], corners[:, 1]]
    return patches.astype(dtype or image.dtype, copy=True), corners


def reassemble_patches(
    patches: np.ndarray, corners: np.ndarray, shape: tuple[int, int], *, dtype: type = np.float32
) -> np.ndarray:
    """Average overlapping patches back into a frame.

    Each pixel is the mean of every patch value that covers it (uniform weights, divided by the
    coverage count), accumulated in float64: patches cut from an image reassemble to exactly that
    image at any patch size and stride.

    Parameters
    ----------
    patches : numpy.ndarray
        ``(n_patches, p, p)`` (a trailing channel axis of 1 is accepted).
    corners : numpy.ndarray
        ``(n_patches, 2)`` top-left corners, as returned by :func:`extract_patches`.
    shape : tuple of int
        ``(H, W)`` of the frame.
    dtype : type
        Output dtype.

    Returns
    -------
    numpy.ndarray
        The ``(H, W)`` frame.

    Raises
    ------
    ValueError
        Inconsistent patches/corners, or pixels not covered by any patch.
    """
    patches = np.asarray(patches)
    if patches.ndim == 4 and patches.shape[-1] == 1:
        patches = patches[..., 0]
    corners = np.asarray(corners)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or len(patches) != len(corners):
        raise ValueError(f"patches {patches.shape} and corners {corners.shape} do not match")
    p = patches.shape[1]
    acc = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.int32)
    for patch, (r, c) in zip(patches, corners, strict=True):
        acc[r : r + p, c : c + p] += patch
        count[r : r + p, c : c + p] += 1
    if not count.all():
        raise ValueError("the patches do not cover the whole frame")
    return (acc / count).astype(dtype, copy=False)


def dihedral(batch: np.ndarray, ops: np.ndarray, *, inverse: bool = False) -> np.ndarray:
    """Apply one of the 8 flips/rotations by 90 degrees to each square patch of a batch.

    Parameters
    ----------
    batch : numpy.ndarray
        ``(n, p, p, ...)`` patches.
    ops : numpy.ndarray
        ``(n,)`` integers in ``0..7``: rotation by ``op % 4`` quarter turns, then a left-right
        flip when ``op >= 4``.  0 is the identity.
    inverse : bool
        Undo the transforms instead (flip first, then rotate back).

    Returns
    -------
    numpy.ndarray
        A new array of the transformed patches.
    """
    out = np.empty_like(batch)
    for op in range(8):
        sel = np.flatnonzero(ops == op)
        if sel.size == 0:
            continue
        if inverse:
            part = batch[sel][:, :, ::-1] if op >= 4 else batch[sel]
            part = np.rot90(part, k=-(op % 4), axes=(1, 2))
        else:
            part = np.rot90(batch[sel], k=op % 4, axes=(1, 2))
            if op >= 4:
                part = part[:, :, ::-1]
        out[sel] = part
    return out
