"""Every reconstruction backend side by side: seconds per slice, the whole volume, accuracy.

The phantom is analytic: each slice is a set of disks (nested and overlapping, values of both
signs) whose parallel-beam line integrals are exact, so the noise-free reference is the disks
rasterised with 2 x 2 supersampling, not another reconstruction.  Accuracy is the PSNR inside the
reconstruction circle (radius ``width / 2 - 2``) against that reference, range = the reference's;
every backend uses the Hann-windowed ramp (the one window all of them have).

Outside references, run in this benchmark only: algotom's FBP (``fbp_reconstruction``,
CPU, Hann window as algotom's default, orientation matched to ours by the best of the 8
flips/transposes) and algotom's DFI (our ``"dfi"`` backend is algotom's DFI with its orientation
calibrated).  The ``"nufft"`` backend is ours (FINUFFT); ``"astra"`` is the ASTRA Toolbox's FBP
(CPU here, ``FBP_CUDA`` on a GPU).  TomoPy's gridrec runs where TomoPy is importable.

Times: a warm-up call first (numba compiles, FFT plans); then ``--slices`` slices (fewer for the
slow backends at large sizes), per slice = the time / slices; the volume = per slice x width
(slices of a ``width^3`` volume) -- an estimate from slabs, never a full 2048^3 run.

Prints a Markdown table; ``--json`` also prints one JSON object as the last line:
``{"size": S, "angles": N, "backends": {NAME: {"s_per_slice": ..., "psnr_db": ...}, ...}}``.

Run: ``.venv/bin/python benchmarks/bench_recon.py --size 1024 --angles 721 [--json]``
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

#: One window for every backend (skimage has no Parzen; Hann is algotom's default).
FILTER = "hann"

#: Backends too slow to time on many slices at large sizes: one slice there.
SLOW = ("fbp", "astra", "skimage", "keras", "algotom-fbp")


def disks(width: int, seed: int, count: int = 14) -> np.ndarray:
    """``(count, 4)`` disks ``(x, y, r, value)`` in centred pixel coordinates, inside the circle."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.03, 0.2, count) * width
    rho = rng.uniform(0.0, 0.45 * width - r)
    phi = rng.uniform(0.0, 2 * np.pi, count)
    value = rng.uniform(-0.3, 1.0, count) / width * 64  # line integrals of order 1 at any width
    value[0], r[0], rho[0] = 0.5 / width * 64, 0.44 * width, 0.0  # the body
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), r, value], axis=1)


def line_integrals(shapes: list[np.ndarray], theta: np.ndarray, width: int) -> np.ndarray:
    """Exact line integrals ``(angles, slices, width)`` of the disks, axis at ``(width - 1) / 2``."""
    u = np.arange(width) - (width - 1) / 2.0
    out = np.zeros((theta.size, len(shapes), width), dtype=np.float64)
    cos_t, sin_t = np.cos(theta)[:, None], np.sin(theta)[:, None]
    for s, d in enumerate(shapes):
        for x, y, r, v in d:
            t = u[None, :] - (x * cos_t + y * sin_t)
            out[:, s] += 2.0 * v * np.sqrt(np.clip(r * r - t * t, 0.0, None))
    return out.astype(np.float32)


def raster(d: np.ndarray, width: int, supersample: int = 2) -> np.ndarray:
    """The disks as pixel averages (``supersample^2`` samples per pixel)."""
    step = 1.0 / supersample
    c = np.arange(width * supersample) * step - (width - 1) / 2.0 - 0.5 + step / 2
    out = np.zeros((width * supersample, width * supersample), dtype=np.float32)
    for x, y, r, v in d:
        ix = np.abs(c - x) <= r
        iy = np.abs(c - y) <= r
        sub = (c[iy, None] - y) ** 2 + (c[None, ix] - x) ** 2 <= r * r
        out[np.ix_(iy, ix)] += np.float32(v) * sub
    return out.reshape(width, supersample, width, supersample).mean(axis=(1, 3))


def psnr_inside(rec: np.ndarray, ref: np.ndarray) -> float:
    width = ref.shape[-1]
    c = np.arange(width) - (width - 1) / 2.0
    inside = np.hypot(c[:, None], c[None, :]) < width / 2 - 2
    mse = float(np.mean((rec[..., inside] - ref[..., inside]) ** 2))
    rng = float(np.ptp(ref[..., inside]))
    return 10 * np.log10(rng * rng / mse)


def _algotom_fbp(li: np.ndarray, theta: np.ndarray, ncore: int) -> np.ndarray:
    import warnings

    from algotom.rec.reconstruction import fbp_reconstruction

    width = li.shape[-1]
    out = np.empty((li.shape[1], width, width), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(li.shape[1]):
            out[s] = fbp_reconstruction(li[:, s, :], (width - 1) / 2.0, angles=theta, apply_log=False,
                                        gpu=False, ncore=ncore)  # fmt: skip
    return out


def _oriented(rec: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The flip/transpose of ``rec`` nearest ``ref`` (third-party conventions are not ours)."""
    from bluesky_lowdose.recon.backends import _ORIENTATIONS, _apply_orientation

    return max((_apply_orientation(rec, o) for o in _ORIENTATIONS), key=lambda r: psnr_inside(r, ref))


def run(size: int, angles: int, slices: int, backends: list[str], ncore: int) -> dict:
    from bluesky_lowdose.recon import available_backends, reconstruct

    theta_deg = np.linspace(0.0, 180.0, angles)  # inclusive: DFI needs it, as many beamlines take
    theta = np.deg2rad(theta_deg)
    shapes = [disks(size, seed) for seed in range(slices)]
    li = line_integrals(shapes, theta, size)
    ref = np.stack([raster(d, size) for d in shapes])
    results: dict[str, dict] = {}
    for name in backends:
        if name != "algotom-fbp" and name not in available_backends():
            results[name] = {"error": "not importable"}
            continue
        n = 1 if (name in SLOW and size >= 1024) else slices

        def call(x: np.ndarray, th: np.ndarray, name: str = name) -> np.ndarray:
            if name == "algotom-fbp":
                return _algotom_fbp(x, np.deg2rad(th), ncore)
            return reconstruct(x, th, backend=name, ncore=ncore, mask=False, filter=FILTER)

        warm = np.linspace(0.0, 180.0, 9)
        call(np.ones((9, 1, 64), np.float32), warm)  # warm-up: compilation and plans
        t0 = time.perf_counter()
        try:
            rec = call(li[:, :n], theta_deg)
        except Exception as exc:  # a backend that refuses the geometry is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        seconds = time.perf_counter() - t0
        if name == "algotom-fbp":
            rec = _oriented(rec, ref[:n])
        per = seconds / n
        results[name] = {"s_per_slice": round(per, 4), "volume_s": round(per * size, 1), "slices_timed": n,
                         "psnr_db": round(psnr_inside(rec, ref[:n]), 2)}  # fmt: skip
        print(f"  {name}: {per:.3f} s/slice, {results[name]['psnr_db']} dB", file=sys.stderr, flush=True)
    return {"size": size, "angles": angles, "ncore": ncore, "machine": machine(), "backends": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--angles", type=int, default=361)
    parser.add_argument("--slices", type=int, default=4,
                        help="slices timed per backend (1 for the slow ones from 1024 pixels)")  # fmt: skip
    parser.add_argument("--backends", nargs="+", default=["nufft", "fbp", "astra", "dfi", "algotom-fbp",
                                                          "tomopy", "skimage", "keras"])  # fmt: skip
    parser.add_argument("--ncore", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.size, args.angles, args.slices, args.backends, args.ncore)
    print(f"\n{args.angles} x {args.size}^2, {out['ncore']} threads; {out['machine']}\n")
    print("| backend | s / slice | volume (s, estimated) | PSNR inside the circle (dB) |")
    print("|---|---|---|---|")
    for name, r in out["backends"].items():
        if "error" in r:
            print(f"| {name} | — | — | {r['error']} |")
        else:
            print(f"| {name} | {r['s_per_slice']:.3f} | {r['volume_s']:.0f} | {r['psnr_db']:.2f} |")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
