"""A ``lowdose-tomo evaluate`` protocol's whole scan at 1/10 dose, its truth and scorer, for the
benchmarks that run the pipeline end to end on one case (``bench_refit``, ``bench_auto_budget``,
``bench_n2i_inference``)."""

from __future__ import annotations

import json
from typing import Any

from bench_protocols import CASES


def protocol_scan(
    name: str, size: int, *, seed: int = 0, angles_per_width: float | None = None
) -> dict[str, Any]:
    """Case ``name`` of :data:`bench_protocols.CASES` as a whole scan of ``size`` rows.

    Returns
    -------
    dict
        ``cfg`` (the ``EvaluationConfig``), ``scan`` (``protocol.low_dose_scan``: ``pairs`` and
        ``counts`` are keyword arguments of ``enhance_scan``), ``theta``, ``frames`` (the 1/10-dose
        transmission), ``score`` (PSNR / SSIM inside the object against the noise-free
        reconstruction of what the detector records, the central ``size / 8`` slices) and ``record``
        (the case, size, angles and seed: the start of a benchmark's JSON line).
    """
    from bluesky_lowdose.evaluation import EvaluationConfig
    from bluesky_lowdose.evaluation import protocol as P

    c = CASES[name]
    ratio = c["angles"] if angles_per_width is None else angles_per_width
    cfg = EvaluationConfig(
        mode="poisson",
        size=size,
        angles=max(8, round(ratio * size)),
        dose_ladder=(),
        phantom=c["phantom"],
        flux=c["flux"],
        psf_sigma=c["psf_sigma"],
        seed=seed,
        slices=0,
        margin=0,
        progress=False,
    )
    scan = P.low_dose_scan(cfg)
    theta = scan["theta"]
    truth = P.reference_volume(cfg, scan["physics"], theta)[0]
    scorer = P._Scorer(truth, slice(size // 2 - size // 16, size // 2 + size // 16), None)

    def score(volume: Any) -> tuple[float, float]:
        s = scorer(volume)[0]
        return float(s["psnr"]), float(s["ssim"])

    record = {"case": name, "size": size, "angles": cfg.angles, "seed": seed}
    return {"cfg": cfg, "scan": scan, "theta": theta, "frames": scan["low"]["transmission"], "score": score,
            "record": record}  # fmt: skip


def append_json(path: str | None, row: dict[str, Any]) -> None:
    """One JSON line appended to ``path`` (nothing without a path)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
