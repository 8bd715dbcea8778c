"""The learned steps and the reconstruction at beamline sizes, on whatever accelerator Keras sees.

Run on a GPU machine with the ``gpu`` extra (Keras on PyTorch with CUDA)::

    KERAS_BACKEND=torch .venv/bin/python benchmarks/bench_gpu.py --json

(``benchmarks/gpu_device.sh`` does this on a machine without Keras installed, from wheels carried
in ``.whl/``) and, to check it runs at all, on a CPU at small sizes::

    .venv/bin/python benchmarks/bench_gpu.py --size 128 --frames 16 --recon-size 64 --n2i-steps 20 --epochs 2

Prints a Markdown table (or one JSON line per step with ``--json``) against the targets of issue 11:

==========================================  =========================================
step                                        target
==========================================  =========================================
train the projection U-Net to convergence   < 60 s
enhance 361 frames of 1024^2                < 1 s
Noise2Inverse (the learned slice step)      reported (no target)
reconstruct 1024^3 (FBP, 1024 angles)       within 2x of tomocupy per voxel (2048^3 < 7 s on an A100)
==========================================  =========================================

The reconstruction runs ``--recon-backend`` (default ``"keras"``: the package's FBP written with
``keras.ops``, on the device of the Keras backend: the GPU with ``KERAS_BACKEND=torch`` on a CUDA
machine, the CPU with TensorFlow).  The row names the backend and the device it ran on; the other
backends (``"fbp"``, ``"dfi"``, ...) are CPU code.  The time includes the host-side work of
:func:`~bluesky_lowdose.recon.reconstruct` (slice chunks copied to and from the device, the mask).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine

from bluesky_lowdose.recon.backends import BACKENDS

#: Published reference (tomocupy, A100): 2048^3 in < 7 s.
TOMOCUPY_S_PER_VOXEL = 7.0 / 2048**3


def _accelerator() -> str:
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "torch":
            import torch

            return f"torch {torch.__version__}, " + (
                torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
            )
        if backend == "jax":
            import jax

            return f"jax {jax.__version__}, {jax.devices()[0]}"
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"tensorflow {tf.__version__}, " + (f"{len(gpus)} GPU(s)" if gpus else "CPU only")
    except Exception as exc:  # report, do not fail: the table says what ran
        return f"{backend}: {exc!r}"


def _recon_setup(backend: str, n: int) -> tuple[str, int | None]:
    """Where ``backend`` computes, and the slices per chunk to pass to ``reconstruct``.

    The ``"keras"`` backend on a GPU gets 64 slices per chunk (long contiguous rows to gather)
    and an 8 GiB budget per chunk of angles (at most a quarter of the free device memory);
    elsewhere ``reconstruct``'s own chunking (about 256 MiB) is kept.
    """
    if backend != "keras":
        return "CPU", None
    from bluesky_lowdose.recon import keras_fbp

    device = keras_fbp.describe_device()
    if "cpu" in device.lower():
        return device, None
    budget = 8 * 2**30
    if device.startswith("torch"):
        import torch

        free, _total = torch.cuda.mem_get_info()
        budget = min(budget, free // 4)
    keras_fbp.MEMORY_BYTES = int(budget)
    return device, min(n, 64)


def _pairs(size: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic pairs: projections of the phantom as transmission, and a 10 %-noise copy."""
    from bluesky_lowdose.physics import make_phantom

    phantom = make_phantom(size, seed=seed)
    p = phantom.project_many(np.linspace(0.0, 180.0, n, endpoint=False))
    long_ = np.exp(-2.5 * p / p.max()).astype(np.float32)
    rng = np.random.default_rng(seed)
    short = (long_ + rng.normal(0.0, 0.1 * long_.mean(), long_.shape)).astype(np.float32)
    return short, long_


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="frame edge for training/enhancement")
    parser.add_argument("--frames", type=int, default=361, help="frames to enhance")
    parser.add_argument("--recon-size", type=int, default=1024, help="edge of the reconstructed volume")
    parser.add_argument("--n2i-steps", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--recon-backend",
        default="keras",
        choices=BACKENDS,
        help='reconstruction backend of the reconstruction row (default "keras": keras.ops on the '
        "Keras backend's device)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "recon"],
                        help="steps not timed: 'train' trains 1 epoch (enhancement still runs), "
                        "'recon' reconstructs only the slices Noise2Inverse needs")  # fmt: skip
    parser.add_argument("--enhance-batch", nargs="*", type=int, default=[0],
                        help="frames per network call to time enhancement with (0: the default)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bluesky_lowdose import model as bm
    from bluesky_lowdose.model.n2i import denoise_splits, train_noise2inverse
    from bluesky_lowdose.recon import reconstruct

    rows: list[dict] = []

    def record(step: str, seconds: float, target: str, ok: bool | None, **extra) -> None:
        rows.append({"step": step, "seconds": round(seconds, 3), "target": target, "met": ok, **extra})
        if args.json:
            print(json.dumps(rows[-1]), flush=True)

    short, long_ = _pairs(args.size, 3)
    t = time.perf_counter()
    epochs = 1 if "train" in args.skip else args.epochs
    enhancer = bm.train(short, long_, epochs=epochs, patience=6, progress=False, max_patches=4096)
    train_s = time.perf_counter() - t
    epochs = len(enhancer.provenance["history"]["val_loss"])
    full_size = args.size == 1024
    if "train" not in args.skip:
        record(f"train projection U-Net ({args.size}^2 pairs)", train_s, "< 60 s (1024^2)",
               train_s < 60 if full_size else None, epochs=epochs)  # fmt: skip

    frames = np.repeat(short[:1], args.frames, axis=0)
    for batch in args.enhance_batch:
        enhancer.enhance(frames[:2], batch_size=batch or None)  # compile / warm up
        t = time.perf_counter()
        enhancer.enhance(frames, batch_size=batch or None)
        enhance_s = time.perf_counter() - t
        target = args.frames == 361 and args.size == 1024
        record(f"enhance {args.frames} x {args.size}^2", enhance_s, "< 1 s (361 x 1024^2)",
               enhance_s < 1.0 if target else None, batch_size=batch or "default")  # fmt: skip

    n = args.recon_size
    from bluesky_lowdose.physics import make_phantom

    m = min(n, 256)
    theta = np.linspace(0.0, 180.0, n, endpoint=False)
    # the cost depends on the sizes only: a 256^3 phantom's projections tiled to n angles x n^2
    li = np.resize(make_phantom(m, seed=1).project_many(theta[:m]).astype(np.float32), (n, n, n))
    device, chunk_slices = _recon_setup(args.recon_backend, n)
    how = {"chunk_slices": chunk_slices}
    if args.recon_backend == "keras":
        from bluesky_lowdose.recon import keras_fbp

        how.update(contraction=keras_fbp.resolve_contraction(), memory_bytes=keras_fbp.MEMORY_BYTES)
    info: dict = {}
    if "recon" in args.skip:
        li = li[:, : min(n, 64)]
    reconstruct(li[:, : min(n, 4)], theta, backend=args.recon_backend)  # compile / warm up
    t = time.perf_counter()
    volume = reconstruct(li, theta, backend=args.recon_backend, chunk_slices=chunk_slices, info=info)
    recon_s = time.perf_counter() - t
    per_voxel = recon_s / volume.size
    if "recon" not in args.skip:
        record(f"reconstruct {n}^3 (FBP, {li.shape[0]} angles, {info['backend']} backend on {device})",
               recon_s, "<= 2x tomocupy per voxel (>= 512^3)",
               per_voxel <= 2 * TOMOCUPY_S_PER_VOXEL if n >= 512 else None,
               s_per_voxel=per_voxel, tomocupy_s_per_voxel=TOMOCUPY_S_PER_VOXEL, backend=info["backend"],
               device=device, **how)  # fmt: skip

    parts = [volume[: min(n, 64)], volume[: min(n, 64)] + np.float32(0.01)]
    t = time.perf_counter()
    denoiser = train_noise2inverse(parts, steps=args.n2i_steps)
    record(f"Noise2Inverse training, {args.n2i_steps} steps (crops of 64^2, batch 16)",
           time.perf_counter() - t, "reported", None)  # fmt: skip
    t = time.perf_counter()
    denoise_splits(denoiser, parts)
    record(f"Noise2Inverse inference, {parts[0].shape[0]} slices of {n}^2 (2 subsets x 8 flips)",
           time.perf_counter() - t, "reported", None)  # fmt: skip

    if not args.json:
        print(f"machine: {machine()}")
        print(
            f"accelerator: {_accelerator()} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')})"
        )
        print("| step | seconds | target | met |")
        print("|---|---|---|---|")
        for r in rows:
            met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
            print(f"| {r['step']} | {r['seconds']:.2f} | {r['target']} | {met} |")
    else:
        print(json.dumps({"machine": machine(), "accelerator": _accelerator()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
