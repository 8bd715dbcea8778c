"""The evaluation's targets: what the default method must beat, by how much, and the check.

A leaf module: the protocol (which runs the methods) and the report (which prints the margins)
both read it, and neither imports the other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TARGETS", "TARGET_BASELINES", "target_check"]

#: The baselines the default method is measured against (best of those run, per metric).
TARGET_BASELINES: tuple[str, ...] = ("bm3d", "bm3d-slices")
#: Margins (default method minus best baseline) the default method must reach, per mode:
#: strictly more than 0 where the value is 0.
TARGETS: dict[str, dict[str, float]] = {
    "gaussian": {"ssim": 0.05, "psnr": 1.0},
    "poisson": {"ssim": 0.0, "psnr": 0.0},
}


def _default(result_or_none: dict[str, Any] | None = None) -> str:
    if result_or_none and "default_method" in result_or_none:
        return str(result_or_none["default_method"])
    from bluesky_lowdose.pipeline import AUTO_WITH_PAIRS

    return AUTO_WITH_PAIRS


def target_check(
    scores: dict[str, dict[str, float]], mode: str, default: str | None = None
) -> dict[str, Any] | None:
    """Margin of the default method over the best BM3D baseline, and whether the target is met.

    The best baseline is taken per metric among :data:`TARGET_BASELINES`
    that were run; the margin is ``default - best``; the target
    (:data:`TARGETS`) is met when both margins reach it
    (strictly exceed it where it is 0).

    Parameters
    ----------
    scores : dict
        ``{method: {"psnr", "ssim"}}`` of one level.
    mode : {"gaussian", "poisson"}
        Selects the target.
    default : str, optional
        The default method (default :data:`bluesky_lowdose.pipeline.AUTO_WITH_PAIRS`).

    Returns
    -------
    dict or None
        ``default``, ``best_baseline`` and ``margin`` per metric, ``required``, ``met``; None when
        the default method or every baseline is missing.
    """
    default = default or _default()
    base = [m for m in TARGET_BASELINES if m in scores]
    if default not in scores or not base:
        return None
    required = TARGETS[mode]
    best: dict[str, str] = {}
    margin: dict[str, float] = {}
    met = True
    for metric in ("ssim", "psnr"):
        b = max(base, key=lambda m, metric=metric: scores[m][metric])
        best[metric] = b
        margin[metric] = float(scores[default][metric] - scores[b][metric])
        need = required[metric]
        met = met and (margin[metric] > 0 if need == 0 else margin[metric] >= need)
    return {"default": default, "best_baseline": best, "margin": margin, "required": dict(required),
            "met": bool(met)}  # fmt: skip
