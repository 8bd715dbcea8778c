"""Filtered back-projection written with ``keras.ops`` only: it runs where the Keras backend runs.

With ``KERAS_BACKEND=torch`` (or ``jax``) on a machine with a GPU the filtering and the
back-projection run on the GPU; with TensorFlow on a CPU it is a (slower) CPU path.  The
algorithm is the one of the ``"fbp"`` backend (:mod:`.filters` and :mod:`._kernels`), so both
give the same volume to float32 rounding:

1. every detector row is edge-padded to :func:`~.filters.padded_length`, multiplied in
   Fourier space by :func:`~.filters.ramp_response` and cropped back (``keras.ops.rfft`` /
   ``irfft``);
2. the filtered sinogram is laid out slices-last, ``[n_angles * width, n_slices]``, each row
   paired with its right-hand neighbour, ``[n_angles * width, 2 * n_slices]``;
3. for a chunk of angles the detector coordinate ``u = x cos(theta) + y sin(theta) + center``
   of every pixel is computed, the pair of rows around it is gathered
   (``keras.ops.take(..., axis=0)``: one contiguous row per pixel and angle, the same index
   for every slice), weighted linearly and summed over the chunk into ``[width * width,
   n_slices]`` (an element-wise product and a sum, or one batched matrix product: see
   :data:`CONTRACTION`).

Pixels whose coordinate lies outside the detector ``[0, width - 1]`` contribute nothing, as
in the numba kernel; which pixels those are is decided on the host in float64 with the
kernel's own test, so the two backends agree on the support exactly.  Keras is imported
inside the functions: importing this module loads numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .filters import padded_length, ramp_response

__all__ = [
    "CONTRACTION",
    "MEMORY_BYTES",
    "angle_chunk_size",
    "backproject",
    "describe_device",
    "fbp",
    "filter_sinogram",
    "resolve_contraction",
]

#: Default budget, in bytes, of the temporaries of one chunk of angles (gathered rows and
#: their weighted copy, indices, weights); the back-projection processes as many angles at a
#: time as fit.  Raise it on a GPU with memory to spare (fewer, larger kernel launches).
MEMORY_BYTES = 1 << 30

#: How the gathered detector rows are weighted and summed over a chunk of angles:
#: ``"multiply"`` (element-wise product, then a sum: exact float32 on every backend),
#: ``"einsum"`` (a batched matrix product: the rows are read once, not three times) or
#: ``"auto"``: ``"einsum"`` where the backend's float32 matrix products round in float32
#: (PyTorch with ``torch.get_float32_matmul_precision() == "highest"``, its default; TensorFlow
#: and JAX on a CPU), ``"multiply"`` where they may not (TensorFlow and JAX use TF32, 10-bit
#: mantissas, for float32 products on recent NVIDIA GPUs by default: 1e-3 errors).
CONTRACTION = "auto"

_CONTRACTIONS = ("auto", "einsum", "multiply")


def describe_device() -> str:
    """Say where ``keras.ops`` computations run: Keras backend and device.

    Returns
    -------
    str
        For example ``"torch on cuda (NVIDIA H200)"`` or ``"tensorflow on CPU"``.
    """
    import keras

    name = keras.backend.backend()
    try:
        if name == "torch":
            import torch

            if torch.cuda.is_available():
                return f"torch on cuda ({torch.cuda.get_device_name(torch.cuda.current_device())})"
            return "torch on CPU"
        if name == "jax":
            import jax

            dev = jax.devices()[0]
            return f"jax on {dev.platform} ({getattr(dev, 'device_kind', dev)})"
        if name == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            return f"tensorflow on {gpus[0].name}" if gpus else "tensorflow on CPU"
    except Exception as exc:  # describe, never fail: this is a label
        return f"{name} ({exc!r})"
    return name


def resolve_contraction(name: str | None = None) -> str:
    """The contraction :func:`backproject` uses on the active Keras backend.

    Parameters
    ----------
    name : str, optional
        ``"auto"``, ``"einsum"`` or ``"multiply"``; None means :data:`CONTRACTION`.

    Returns
    -------
    str
        ``"einsum"`` or ``"multiply"``.

    Raises
    ------
    ValueError
        For another name.
    """
    name = CONTRACTION if name is None else name
    if name not in _CONTRACTIONS:
        raise ValueError(f"unknown contraction {name!r}; choose one of {', '.join(_CONTRACTIONS)}")
    if name != "auto":
        return name
    import keras

    return "einsum" if _ieee_float32_matmul(keras.backend.backend()) else "multiply"


def _ieee_float32_matmul(backend: str) -> bool:
    """Whether the Keras backend's float32 matrix products round in float32 (not TF32/bf16)."""
    try:
        if backend == "torch":
            import torch

            return torch.get_float32_matmul_precision() == "highest"
        if backend == "tensorflow":
            import tensorflow as tf

            return not (
                tf.config.list_logical_devices("GPU")
                and tf.config.experimental.tensor_float_32_execution_enabled()
            )
        if backend == "jax":
            import jax

            precision = str(jax.config.jax_default_matmul_precision or "").lower()
            return jax.default_backend() == "cpu" or precision in ("highest", "float32")
    except Exception:  # unknown: take the exact path
        return False
    return False


def _bytes_per_pixel_angle(n_slices: int) -> int:
    """Temporaries per (pixel, angle): gathered pair of rows and its weighted copy, float32,
    plus the index, weights and coordinates (about 12 numbers)."""
    return 2 * (2 * n_slices * 4) + 12 * 8


def angle_chunk_size(width: int, n_slices: int, n_angles: int, memory_bytes: int | None = None) -> int:
    """Angles back-projected together so that the temporaries stay within a memory budget.

    Parameters
    ----------
    width : int
        Detector width (the image is ``width x width``).
    n_slices : int
        Slices reconstructed together.
    n_angles : int
        Number of projections (the upper bound).
    memory_bytes : int, optional
        Budget; default :data:`MEMORY_BYTES`.

    Returns
    -------
    int
        Between 1 and ``n_angles`` (1 even when a single angle exceeds the budget).
    """
    budget = MEMORY_BYTES if memory_bytes is None else int(memory_bytes)
    per_angle = width * width * _bytes_per_pixel_angle(n_slices)
    return int(min(max(budget // max(per_angle, 1), 1), max(n_angles, 1)))


def filter_sinogram(sino: Any, name: str = "parzen", *, memory_bytes: int | None = None) -> Any:
    """Apply the windowed ramp filter along the last axis, on the Keras device.

    The same operation as :func:`bluesky_lowdose.recon.filters.filter_sinogram`: symmetric
    edge padding to :func:`~.filters.padded_length`, multiplication of the ``rfft`` by
    :func:`~.filters.ramp_response`, inverse transform, crop.

    Parameters
    ----------
    sino : numpy.ndarray or tensor
        ``(n_angles, n_slices, width)`` line integrals (float32).
    name : str
        Apodisation window, see :func:`~.filters.window`.
    memory_bytes : int, optional
        Budget of the temporaries of one chunk of angles; default :data:`MEMORY_BYTES`.

    Returns
    -------
    tensor
        Float32 backend tensor of the same shape, on the Keras device.
    """
    from keras import ops

    x = ops.convert_to_tensor(sino, dtype="float32")
    n_ang, n_sl, width = (int(d) for d in x.shape)
    length = padded_length(width)
    left = (length - width) // 2
    right = length - width - left
    response = ops.convert_to_tensor(ramp_response(length, name).astype(np.float32))
    # padded row, its two-part spectrum and the inverse: about 6 float32 per padded sample
    budget = MEMORY_BYTES if memory_bytes is None else int(memory_bytes)
    step = int(min(max(budget // max(6 * 4 * n_sl * length, 1), 1), n_ang))
    pieces = []
    for a0 in range(0, n_ang, step):
        block = x[a0 : a0 + step]
        parts = []
        if left:
            parts.append(ops.repeat(block[..., :1], left, axis=-1))
        parts.append(block)
        if right:
            parts.append(ops.repeat(block[..., -1:], right, axis=-1))
        padded = ops.concatenate(parts, axis=-1)
        real, imag = ops.rfft(padded, fft_length=length)
        out = ops.irfft((real * response, imag * response), fft_length=length)
        pieces.append(out[..., left : left + width])
    return pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=0)


def _geometry(
    theta_rad: np.ndarray, center: float, size: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (angle, image row): ``u`` of column 0 and the first/last column inside the detector.

    The float64 arithmetic and the 1e-9 tolerances of the numba kernel (:mod:`._kernels`), so
    both back-projectors let exactly the same pixels see each projection.
    """
    half = 0.5 * (size - 1)
    last = width - 1
    cos_t = np.cos(np.asarray(theta_rad, dtype=np.float64))
    sin_t = np.sin(np.asarray(theta_rad, dtype=np.float64))
    yc = np.arange(size, dtype=np.float64) - half
    base = yc[None, :] * sin_t[:, None] + float(center) - half * cos_t[:, None]
    c = np.broadcast_to(cos_t[:, None], base.shape)
    flat = np.abs(c) < 1e-12
    safe = np.where(flat, 1.0, c)
    a = (0.0 - base) / safe
    b = (last - base) / safe
    lo_f = np.minimum(a, b)
    hi_f = np.maximum(a, b)
    # clipped to [0, size] and [-1, size - 1]: near-vertical rays give huge bounds (int32-safe)
    lo = np.clip(np.ceil(lo_f - 1e-9), 0.0, float(size))
    hi = np.clip(np.floor(hi_f + 1e-9), -1.0, size - 1.0)
    inside = (base >= 0.0) & (base <= last)
    lo = np.where(flat, np.where(inside, 0.0, 1.0), lo)
    hi = np.where(flat, np.where(inside, size - 1.0, 0.0), hi)
    return base.astype(np.float32), cos_t.astype(np.float32), lo.astype(np.int32), hi.astype(np.int32)


def backproject(
    filtered: Any,
    theta_rad: np.ndarray,
    center: float,
    size: int,
    *,
    angle_chunk: int | None = None,
    memory_bytes: int | None = None,
    contraction: str | None = None,
) -> np.ndarray:
    """Back-project filtered sinograms with linear interpolation along the detector, on the Keras device.

    Voxel ``[s, y, x]`` (centred coordinates ``x - (size-1)/2``) reads detector position
    ``u = x cos(theta) + y sin(theta) + center``, as :func:`bluesky_lowdose.recon._kernels.backproject`;
    positions outside ``[0, width - 1]`` contribute 0.  No angular weight is applied.

    Parameters
    ----------
    filtered : numpy.ndarray or tensor
        ``(n_angles, n_slices, width)`` filtered sinograms (float32).
    theta_rad : numpy.ndarray
        Projection angles in radians.
    center : float
        Detector column of the rotation axis.
    size : int
        Edge of the reconstructed image.
    angle_chunk : int, optional
        Angles gathered together; by default sized by :func:`angle_chunk_size`.
    memory_bytes : int, optional
        Budget passed to :func:`angle_chunk_size`.
    contraction : str, optional
        How the gathered rows are weighted and summed: ``"multiply"`` (an element-wise product
        and a sum), ``"einsum"`` (one batched matrix product per chunk, which reads the
        gathered rows once instead of three times) or ``"auto"``; default :data:`CONTRACTION`.

    Returns
    -------
    numpy.ndarray
        Float32 ``(n_slices, size, size)`` sum over angles.
    """
    from keras import ops

    f = ops.convert_to_tensor(filtered, dtype="float32")
    n_ang, n_sl, width = (int(d) for d in f.shape)
    theta_rad = np.asarray(theta_rad, dtype=np.float64).ravel()
    if theta_rad.size != n_ang:
        raise ValueError(f"{theta_rad.size} angles for {n_ang} projections")
    last = width - 1
    # slices last, each row next to its right-hand neighbour: one gather fetches both
    rows = ops.transpose(f, (0, 2, 1))  # (angle, u, slice)
    if width > 1:
        right = ops.concatenate([rows[:, 1:, :], rows[:, -1:, :]], axis=1)
    else:
        right = rows
    pairs = ops.reshape(ops.concatenate([rows, right], axis=-1), (n_ang * width, 2 * n_sl))
    del rows, right

    base, cos_t, lo, hi = _geometry(theta_rad, center, size, width)
    # pixel-major (y, x, angle): the rows a pixel needs are contiguous in the gathered block
    base_t = ops.convert_to_tensor(np.ascontiguousarray(base.T))  # (y, angle)
    cos_tt = ops.convert_to_tensor(cos_t)
    lo_t = ops.convert_to_tensor(np.ascontiguousarray(lo.T))
    hi_t = ops.convert_to_tensor(np.ascontiguousarray(hi.T))
    ix_f = ops.reshape(ops.arange(size, dtype="float32"), (1, size, 1))
    ix_i = ops.reshape(ops.arange(size, dtype="int32"), (1, size, 1))
    j_max = float(max(last - 1, 0))
    use_einsum = resolve_contraction(contraction) == "einsum"

    step = angle_chunk if angle_chunk else angle_chunk_size(size, n_sl, n_ang, memory_bytes)
    step = max(1, min(int(step), n_ang))
    acc = None
    for a0 in range(0, n_ang, step):
        a1 = min(a0 + step, n_ang)
        n = a1 - a0
        pos = base_t[:, None, a0:a1] + ix_f * cos_tt[None, None, a0:a1]  # (y, x, angle)
        pos = ops.clip(pos, 0.0, float(last))
        j = ops.clip(ops.floor(pos), 0.0, j_max)
        w = pos - j
        valid = ops.logical_and(ix_i >= lo_t[:, None, a0:a1], ix_i <= hi_t[:, None, a0:a1])
        w1 = ops.where(valid, w, 0.0)
        w0 = ops.where(valid, 1.0 - w, 0.0)
        weights = ops.reshape(ops.stack([w0, w1], axis=-1), (size * size, 2 * n))  # (pixel, (angle, k))
        offsets = ops.arange(a0 * width, a1 * width, width, dtype="int32")
        index = ops.reshape(ops.cast(j, "int32") + offsets, (-1,))
        gathered = ops.take(pairs, index, axis=0)  # (pixel * angle, (k, slice))
        gathered = ops.reshape(gathered, (size * size, 2 * n, n_sl))
        if use_einsum:
            part = ops.einsum("pk,pks->ps", weights, gathered)
        else:
            part = ops.sum(gathered * weights[:, :, None], axis=1)
        acc = part if acc is None else acc + part
        del pos, j, w, valid, w0, w1, weights, index, gathered
    out = ops.transpose(ops.reshape(acc, (size, size, n_sl)), (2, 0, 1))
    return np.ascontiguousarray(ops.convert_to_numpy(out), dtype=np.float32)


def fbp(
    sino: np.ndarray,
    theta_rad: np.ndarray,
    center: float,
    filter_name: str = "parzen",
    *,
    angle_chunk: int | None = None,
    memory_bytes: int | None = None,
    contraction: str | None = None,
) -> np.ndarray:
    """Filter and back-project ``(n_angles, n_slices, width)`` line integrals on the Keras device.

    Parameters
    ----------
    sino : numpy.ndarray
        Line integrals ``(n_angles, n_slices, width)``.
    theta_rad : numpy.ndarray
        Projection angles in radians.
    center : float
        Detector column of the rotation axis.
    filter_name : str
        Apodisation of the ramp, see :data:`~.filters.FILTERS`.
    angle_chunk : int, optional
        Angles back-projected together (default: sized from ``memory_bytes``).
    memory_bytes : int, optional
        Budget of the temporaries; default :data:`MEMORY_BYTES`.
    contraction : str, optional
        ``"multiply"``, ``"einsum"`` or ``"auto"``, see :func:`backproject`.

    Returns
    -------
    numpy.ndarray
        Float32 ``(n_slices, width, width)`` indexed ``[z, y, x]``, the sum over angles
        without the angular weight (multiply by
        :func:`~bluesky_lowdose.recon.backends.angle_weight`, as the ``"keras"`` backend does).
    """
    width = int(np.shape(sino)[-1])
    filtered = filter_sinogram(sino, filter_name, memory_bytes=memory_bytes)
    return backproject(
        filtered,
        theta_rad,
        center,
        width,
        angle_chunk=angle_chunk,
        memory_bytes=memory_bytes,
        contraction=contraction,
    )
