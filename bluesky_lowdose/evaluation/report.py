"""Markdown tables, targets, figures and the machine record of an evaluation run."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .targets import TARGETS, _default, target_check

__all__ = ["machine_info", "methods", "summary", "to_json", "to_markdown", "write_report"]

_LEARNED = ("paper", "n2i", "hybrid")
_METHOD_ORDER = ("none", "full-dose", "paper", "n2i", "hybrid", "bm3d", "bm3d-slices", "median", "tv")


def machine_info() -> dict[str, Any]:
    """Describe this machine: ``uname -a``, core count and CPU model.

    Returns
    -------
    dict
        ``uname``, ``nproc`` and ``cpu`` (from ``/proc/cpuinfo`` where it exists).
    """
    u = platform.uname()
    cpu = platform.processor() or u.machine
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - not Linux
        pass
    affinity = getattr(os, "sched_getaffinity", None)
    nproc = len(affinity(0)) if affinity else os.cpu_count()
    return {
        "uname": " ".join([u.system, u.node, u.release, u.version, u.machine]),
        "nproc": nproc,
        "cpu": cpu,
        "python": platform.python_version(),
    }


def methods(result: dict[str, Any]) -> list[str]:
    """List the methods scored in ``result``, in reporting order.

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.

    Returns
    -------
    list of str
        Method names (``"full-dose"`` included in Poisson mode), of every level (a level may lack
        a blend: its tables say ``-`` there).
    """
    # every level's: the blends auto judged differ between levels (both parts not below raw)
    found = {m for e in result["levels"] for m in e["scores"]}
    ordered = [m for m in _METHOD_ORDER if m in found]
    return ordered + sorted(found - set(ordered))


def _level_name(entry: dict[str, Any]) -> str:
    if "level" in entry:
        return f"{100 * entry['level']:g} %"
    return f"1/{entry['dose_ratio']:g} dose"


def _key(entry: dict[str, Any]) -> str:
    return f"{entry['level']:g}" if "level" in entry else f"{entry['dose_ratio']:g}"


def _finite(v: float, digits: int = 4) -> float | None:
    return None if not math.isfinite(v) else round(float(v), digits)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Summarise a result compactly: per level, PSNR/SSIM of every method, targets.

    ``inf`` PSNR is written as None (JSON has no infinity).

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.

    Returns
    -------
    dict
        ``{"mode", "size", "angles", "backend", "seconds", "default_method", "levels": {level:
        {method: {"psnr", "ssim"}}}, "targets": {level: target_check(...)}}``; Poisson mode adds
        ``equivalent_dose`` ``{level: {method: {metric: {"dose", "bound", "reduction"}}}}``.
    """
    cfg = result["config"]
    default = _default(result)
    levels: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    equivalent: dict[str, Any] = {}
    judge: dict[str, Any] = {}
    for entry in result["levels"]:
        key = _key(entry)
        scores = entry["scores"]
        levels[key] = {m: {k: _finite(v) for k, v in s.items()} for m, s in scores.items()}
        check = target_check(scores, cfg["mode"], default)
        if check is not None:
            check["margin"] = {k: _finite(v) for k, v in check["margin"].items()}
        targets[key] = check
        if "equivalent_dose" in entry:
            equivalent[key] = entry["equivalent_dose"]
        if entry.get("judge_agreement"):
            judge[key] = entry["judge_agreement"]
    out = {
        "mode": cfg["mode"],
        "size": cfg["size"],
        "angles": cfg["angles"],
        "backend": result["reconstruction"]["backend"],
        "seconds": result["seconds"].get("total"),
        "default_method": default,
        "levels": levels,
        "targets": targets,
    }
    if equivalent:
        out["equivalent_dose"] = equivalent
    if judge:
        out["judge"] = judge
    out["protocol"] = {k: cfg.get(k) for k in ("phantom", "flux", "psf_sigma", "dead_pixels") if k in cfg}
    return out


def to_json(result: dict[str, Any]) -> str:
    """Format :func:`summary` of the result as one line of JSON.

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.

    Returns
    -------
    str
        JSON without newlines.
    """
    return json.dumps(summary(result), separators=(",", ":"), allow_nan=False)


def _fmt(v: float, digits: int) -> str:
    return "inf" if not math.isfinite(v) else f"{v:.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def _dose_text(e: dict[str, Any]) -> str:
    if e["bound"] == "at least":
        return f"full dose reached (>= {e['reduction']:.3g}x)"
    if e["bound"] == "below":
        return f"< {e['dose']:.3g} (< {e['reduction']:.3g}x)"
    return f"{e['dose']:.3g} ({e['reduction']:.3g}x)"


def to_markdown(
    result: dict[str, Any], *, command: str | None = None, figures: dict[str, str] | None = None
) -> str:
    """Format the results as Markdown: SSIM and PSNR tables, targets, separation, timings, machine.

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.
    command : str, optional
        The command line that produced it.
    figures : dict, optional
        ``{caption: relative path}`` of figures to embed.

    Returns
    -------
    str
        Markdown text.
    """

    cfg = result["config"]
    ms = methods(result)
    default = _default(result)
    gaussian = cfg["mode"] == "gaussian"
    label = {m: (f"{m} (default)" if m == default else m) for m in ms}
    lines = [f"## Results: {cfg['mode']} mode, {cfg['size']}^3 voxels, {cfg['angles']} angles", ""]
    if cfg["mode"] == "poisson":
        lines += [
            f"Protocol: phantom `{cfg.get('phantom', 'spheres')}`, {cfg.get('flux', 300.0):g} open-beam "
            f"photons per pixel at full dose, detector blur sigma {cfg.get('psf_sigma', 0.0):g} px, "
            f"{cfg.get('dead_pixels', 0)} dead pixels. {result.get('reference', '')}.",
            "",
        ]
    rows, slab = result["scored_slices"], result.get("slab_rows", result["scored_slices"])
    pt, n2i = result.get("projection_training", {}), result.get("n2i_options", {})
    lines.append(
        f"Every method ran through `bluesky_lowdose.pipeline.enhance_scan` on detector rows "
        f"{slab[0]}-{slab[1] - 1} (the scored slices {rows[0]}-{rows[1] - 1} of {cfg['size']} and "
        f"{cfg.get('margin', 0)} rows of margin on each side); PSNR and SSIM against R_o **inside the "
        f"object** (`pipeline.score_volume` with `metrics.object_mask(R_o)`; the air is not scored), "
        f"scored slices only. Reconstruction `{result['reconstruction']['backend']}` "
        f"({result['reconstruction']['filter']} filter). Pairs at {result['train_angles_deg']} degrees; "
        f"projection CNN `{pt.get('model')}`, at most {pt.get('epochs')} epochs (patience "
        f"{pt.get('patience')}); Noise2Inverse {n2i.get('steps')} steps; seed {cfg['seed']}. "
        f"Learned default without long exposures: `{default}`; with them `auto` takes what the "
        "long-exposure judge picks (section below)."
    )
    lines.append("")
    for metric, digits in (("ssim", 3), ("psnr", 2)):
        unit = " (dB)" if metric == "psnr" else ""
        head = ["level", *[label[m] for m in ms]]
        if gaussian and metric == "ssim":
            head += ["paper noisy", "paper enhanced"]
        table = []
        for entry in result["levels"]:
            sc = entry["scores"]
            cands = [m for m in ms if m not in ("none", "full-dose") and m in sc]
            best = max(cands, key=lambda m, sc=sc, metric=metric: sc[m][metric], default=None)
            cells = [_level_name(entry)]
            for m in ms:
                txt = _fmt(sc[m][metric], digits) if m in sc else "-"
                cells.append(f"**{txt}**" if m == best else txt)
            if gaussian and metric == "ssim":
                paper = entry.get("paper_ssim")
                cells += [f"{paper['noisy']:.2f}", f"{paper['enhanced']:.2f}"] if paper else ["-", "-"]
            table.append(cells)
        lines += [f"### {metric.upper()}{unit} against R_o, inside the object", ""]
        lines += _table(head, table)
    req = TARGETS[cfg["mode"]]
    need = " and ".join(
        (f">= {req[m]:g}" if req[m] else "> 0") + (" dB PSNR" if m == "psnr" else " SSIM")
        for m in ("ssim", "psnr")
    )
    lines += [
        f"### Target: `{default}` minus the best BM3D baseline (bm3d, bm3d-slices; per metric) {need}",
        "",
    ]
    table = []
    learned_rows = []
    for entry in result["levels"]:
        sc = entry["scores"]
        chk = target_check(sc, cfg["mode"], default)
        if chk is None:
            table.append([_level_name(entry), "-", "-", "-", "-", "n/a (default or baselines not run)"])
        else:
            mg, bb = chk["margin"], chk["best_baseline"]
            table.append([
                _level_name(entry), bb["ssim"], f"{mg['ssim']:+.3f}", bb["psnr"], f"{mg['psnr']:+.2f}",
                "**met**" if chk["met"] else "**missed**",
            ])  # fmt: skip
        learned = [m for m in _LEARNED if m in sc]
        if learned and chk is not None:
            best = max(learned, key=lambda m, sc=sc: sc[m]["ssim"])
            other = target_check(sc, cfg["mode"], best)
            if other is not None:
                mg = other["margin"]
                learned_rows.append([
                    _level_name(entry), best, f"{mg['ssim']:+.3f}", f"{mg['psnr']:+.2f}",
                    "met" if other["met"] else "missed",
                ])  # fmt: skip
    lines += _table(["level", "best SSIM baseline", "SSIM margin", "best PSNR baseline", "PSNR margin (dB)",
                     "target"], table)  # fmt: skip
    if learned_rows:
        lines += [
            "For comparison, the same margins for the best learned method of each level (by SSIM, among "
            f"{', '.join(_LEARNED)}):",
            "",
        ]
        lines += _table(["level", "method", "SSIM margin", "PSNR margin (dB)", "target"], learned_rows)
    spread_rows = []
    for e in result["levels"]:
        for m, sp in e.get("seed_spread", {}).items():
            cells = [_level_name(e), m, str(len(sp["seeds"]))]
            for metric, digits in (("ssim", 3), ("psnr", 2)):
                v = np.asarray(sp[metric], float)
                cells.append(f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} "
                             f"({v.min():.{digits}f}–{v.max():.{digits}f})")  # fmt: skip
            spread_rows.append(cells)
    if spread_rows:
        lines += ["### Spread over training seeds", ""]
        lines.append(
            "Each learned method trained again with other seeds on the same data (`--training-seeds`): "
            "mean ± standard deviation (min–max). The tables above and the slices show the first seed."
        )
        lines.append("")
        lines += _table(["level", "method", "seeds", "SSIM", "PSNR (dB)"], spread_rows)
    judged = [e for e in result["levels"] if e.get("judge_agreement")]
    if judged:
        lines += ["### The long exposures as the judge (no ground truth)", ""]
        lines.append(
            "`pipeline.judge`: each volume projected again at the long exposures' angles and compared "
            "with them inside the object's shadow; the criterion is the gain over the raw reconstruction "
            "on the same angles (pair-trained methods leave-one-out: each pair by a run trained without it). "
            "`picked` is what `auto` would choose among these methods; `regret` the true PSNR lost by it. "
            + (
                "As `auto` judges, every method ran again without the short frames on the long exposures' "
                "views (frames " + ", ".join(map(str, judged[0]["judged_views"]["left_out_frames"])) + "), "
                "so the judge compares with views no reconstruction saw."
                if judged[0].get("judged_views", {}).get("left_out_frames")
                else "Judged in view: the volumes were made from frames at those angles too (biased "
                "towards smoothing; `--judge-views held-out` is how `auto` judges)."
            )
        )
        lines.append("")
        table = []
        for e in judged:
            a = e["judge_agreement"]
            gains = ", ".join(f"{m} {g:+.2f}" for m, g in a["judge_gain_db"].items())
            rho = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
            ceil = next(iter(e["judge"].values())).get("ceiling_psnr_db")
            table.append([_level_name(e), a["picked"], a["best"], f"{a['regret_psnr_db']:.2f}", rho, gains,
                          "-" if ceil is None else f"{ceil:.1f}"])  # fmt: skip
        lines += _table(["level", "judge picks", "truly best (PSNR)", "regret (dB)", "Spearman",
                         "judge gain over raw (dB)", "judge ceiling (dB)"], table)  # fmt: skip
        rows = []
        for e in judged:
            a, sc = e["judge_agreement"], e["scores"]
            base = [m for m in ("bm3d", "bm3d-slices") if m in sc]
            margin = ("-" if not base else
                      f"{a['auto']['psnr'] - max(sc[m]['psnr'] for m in base):+.2f} dB / "
                      f"{a['auto']['ssim'] - max(sc[m]['ssim'] for m in base):+.3f}")  # fmt: skip
            rows.append([_level_name(e), a["auto"]["method"], _fmt(a["auto"]["ssim"], 3),
                         _fmt(a["auto"]["psnr"], 2), margin])  # fmt: skip
        lines += ["`auto` (the default with long exposures) on this case, against the truth:", ""]
        lines += _table(["level", "auto takes", "SSIM", "PSNR (dB)", "minus best BM3D (PSNR / SSIM)"], rows)
        lines += _noise_free_lines([e for e in judged if e.get("noise_free_judge")])
    if not gaussian and "dose_ladder" in result:
        lines += ["### Dose reached: plain-FBP-equivalent dose", ""]
        lines.append(
            "The dose (fraction of the full dose) at which plain reconstruction (method `none`) scores as "
            "well as the method does at the reduced dose, interpolated in log dose between plain scans at "
            f"dose ratios {', '.join(result['dose_ladder'])}; in brackets the dose reduction the method "
            "reaches (equivalent dose x ratio). `full dose reached` means the method at the reduced dose "
            "scores at least as well as the full-dose scan."
        )
        lines.append("")
        table = []
        for entry in result["levels"]:
            for m in ms:
                eq = entry.get("equivalent_dose", {}).get(m)
                if eq is None:
                    continue
                table.append([_level_name(entry), label[m], _dose_text(eq["ssim"]), _dose_text(eq["psnr"])])
        lines += _table(["level", "method", "by SSIM", "by PSNR"], table)
        lines += ["Plain reconstruction per dose ratio (the ladder):", ""]
        lines += _table(
            ["dose ratio", "SSIM", "PSNR (dB)"],
            [[f"1/{r}", _fmt(s["ssim"], 3), _fmt(s["psnr"], 2)] for r, s in result["dose_ladder"].items()],
        )
    pairs = sorted({p for e in result["levels"] for s in e["separation"].values() for p in s})
    if pairs:  # the textured phantom has no phases to separate
        lines += ["### Phase separation (|mean_a - mean_b| / (std_a + std_b); > 1: resolved)", ""]
        lines += ["Phases: 0 background (air included), 1 cube, 2 spheres; whole scored slices.", ""]
        table = [
            [_level_name(e), label[m], *[_fmt(e["separation"][m].get(p, float("nan")), 2) for p in pairs]]
            for e in result["levels"]
            for m in ms
            if m in e["separation"]
        ]
        lines += _table(["level", "method", *pairs], table)
    tuned = []
    for e in result["levels"]:
        parts = []
        for m, prov in e.get("provenance", {}).items():
            proj = (prov or {}).get("projection_step") or {}
            value = (proj.get("model") or {}).get("value")
            if value is not None:
                parts.append(f"{m} {(proj.get('model') or {}).get('parameter', 'value')} {value:.4g}")
            sl = (prov or {}).get("slice_step") or {}
            if sl.get("kind") == "bm3d":
                parts.append(f"{m} sigma {sl['sigma']:.4g} ({sl['factor']:g} x the measured noise)")
        if parts:
            tuned.append(f"- {_level_name(e)}: " + "; ".join(parts))
    if tuned:
        lines += ["Baseline parameters tuned by the pipeline:", "", *tuned, ""]
    if figures:
        for caption, path in figures.items():
            lines += [f"![{caption}]({path})", ""]
    lines += ["### Run", ""]
    mach = result.get("machine") or machine_info()
    if command:
        lines.append(f"- command: `{command}`")
    lines.append(
        f"- machine: `{mach['uname']}`; {mach['nproc']} cores; {mach['cpu']}; Python {mach['python']}"
    )
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    lines.append(f"- wall time: {secs}")
    src = result.get("source_sha256")
    if src:
        same = src["start"] == src["end"]
        lines.append(
            f"- source of pipeline/model/recon/metrics/physics: sha256 `{src['start'][:16]}`"
            + (
                ""
                if same
                else f" at the start, `{src['end'][:16]}` at the end: **the code changed during the run**"
            )
        )
    per = result.get("seconds_per_method")
    if per:
        lines.append("- per method (all levels): " + ", ".join(f"{k} {v:.0f} s" for k, v in per.items()))
    lines.append("")
    return "\n".join(lines)


#: What the figures call R_o, R_n and R_e (the paper's names).
R_NAMES = (
    "R_o: reconstruction of the noise-free projections (the reference); R_n: of the low-dose ones; "
    "R_e: after enhancement"
)


def method_color(method: str) -> Any:
    """One colour per method in every figure (a fixed order over the pipeline's methods)."""
    import matplotlib

    from ..pipeline import METHODS

    order = list(METHODS)
    if method in order:
        return matplotlib.colormaps["tab10"](order.index(method) % 10)
    if method == "full-dose":  # the last tab10 colour: no method has it
        return matplotlib.colormaps["tab10"](9)
    return matplotlib.colormaps["Dark2"](sum(map(ord, method)) % 8)


def _bars(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ms = methods(result)
    entries = result["levels"]
    gaussian = result["config"]["mode"] == "gaussian"
    names = [_level_name(e) for e in entries]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    width = 0.8 / len(ms)
    x = np.arange(len(entries))
    default = _default(result)
    for ax, metric in zip(axes, ("ssim", "psnr"), strict=True):
        for j, m in enumerate(ms):
            vals = [e["scores"].get(m, {}).get(metric, np.nan) for e in entries]
            name = m + (" (default)" if m == default else "")
            edge = "k" if m == default else None
            # the spread over training seeds (min-max) where a learned method ran several times
            spreads = [e.get("seed_spread", {}).get(m, {}).get(metric) for e in entries]
            yerr = None
            if any(spreads):
                yerr = np.array([[v - min(sp), max(sp) - v] if sp else [0.0, 0.0]
                                 for v, sp in zip(vals, spreads, strict=True)]).T  # fmt: skip
                n = max(len(sp) for sp in spreads if sp)
                name += f" (min-max over {n} seeds)"
            ax.bar(x + (j - (len(ms) - 1) / 2) * width, vals, width, label=name, edgecolor=edge,
                   color=method_color(m), yerr=yerr, capsize=3 if yerr is not None else 0)  # fmt: skip
        if metric == "ssim" and gaussian:
            px = [i for i, e in enumerate(entries) if "paper_ssim" in e]
            if px:
                ax.scatter(x[px], [entries[i]["paper_ssim"]["enhanced"] for i in px], marker="*", s=120,
                           color="k", zorder=5, label="paper R_e")  # fmt: skip
                ax.scatter(x[px], [entries[i]["paper_ssim"]["noisy"] for i in px], marker="x", s=60,
                           color="k", zorder=5, label="paper R_n")  # fmt: skip
        ax.set_xticks(x, names)
        ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
        ax.set_title(f"{metric.upper()} vs R_o inside the object")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(bottom=0.0)  # bars from zero: their heights compare
    axes[0].legend(fontsize=8, ncol=2)
    fig.suptitle(
        f"{result['config']['mode']} mode, {result['config']['size']}^3, {result['config']['angles']} angles"
    )
    fig.text(0.5, 0.01, R_NAMES, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panel(result: dict[str, Any], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    slices = result["_figures"][key]["slices"]
    scores = next(e["scores"] for e in result["levels"] if _key(e) == key)
    show = ["reference", *[m for m in methods(result) if m in slices]]
    ref = slices["reference"]
    lo, hi = float(ref.min()), float(ref.max())
    n = ref.shape[-1]
    z0, z1 = n // 2 - n // 6, n // 2 + n // 6
    from matplotlib.patches import Rectangle

    grid = {"hspace": 0.08, "wspace": 0.05, "top": 0.84, "bottom": 0.06}
    size = (2.4 * len(show) + 0.8, 5.0)
    fig, axes = plt.subplots(2, len(show), figsize=size, squeeze=False, gridspec_kw=grid)
    default = _default(result)
    shown = None
    for j, m in enumerate(show):
        img = slices[m]
        title = "R_o (clean)" if m == "reference" else m + (" (default)" if m == default else "")
        if m != "reference":
            title += f"\nSSIM {scores[m]['ssim']:.3f}, {scores[m]['psnr']:.1f} dB"
        shown = axes[0, j].imshow(img, cmap="gray", vmin=lo, vmax=hi)
        axes[0, j].set_title(title, fontsize=8, color="k" if m == "reference" else method_color(m))
        # the crop shown enlarged below, marked where it comes from
        box = Rectangle(
            (z0 - 0.5, z0 - 0.5), z1 - z0, z1 - z0, fill=False, edgecolor="tab:orange", linewidth=1
        )
        axes[0, j].add_patch(box)
        axes[1, j].imshow(img[z0:z1, z0:z1], cmap="gray", vmin=lo, vmax=hi)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
        for side in axes[1, j].spines.values():
            side.set_edgecolor("tab:orange")
    fig.colorbar(
        shown, ax=axes.ravel().tolist(), shrink=0.8, label="attenuation (R_o's units, one grey scale)"
    )
    fig.suptitle(
        f"{result['config']['mode']} mode, {_level_name_from_key(result, key)}: middle scored slice "
        "(bottom: the orange box, enlarged)",
        fontsize=10,
    )
    fig.text(0.5, 0.01, R_NAMES, ha="center", fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _level_name_from_key(result: dict[str, Any], key: str) -> str:
    return next(_level_name(e) for e in result["levels"] if _key(e) == key)


def write_report(
    result: dict[str, Any], out_dir: str | os.PathLike[str], *, command: str | None = None
) -> dict[str, Any]:
    """Write Markdown, JSON and PNG figures of ``result`` under ``out_dir``.

    Files (``<run>`` is ``<mode>-<size>``): ``evaluation-<run>.md``, ``evaluation-<run>.json``,
    ``<run>-bars.png`` and one ``<run>-slices-<level>.png`` per level.

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.
    out_dir : path
        Directory (created).
    command : str, optional
        Recorded in the Markdown and the JSON.

    Returns
    -------
    dict
        ``{"markdown", "json", "bars"}`` paths and ``"slices"``: a list of paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = f"{result['config']['mode']}-{result['config']['size']}"
    result.setdefault("machine", machine_info())
    if command:
        result.setdefault("command", command)
    paths: dict[str, Any] = {"bars": out / f"{run}-bars.png", "slices": []}
    _bars(result, paths["bars"])
    figs = {"SSIM and PSNR per level (inside the object)": paths["bars"].name}
    for entry in result["levels"]:
        key = _key(entry)
        p = out / f"{run}-slices-{key}.png"
        _panel(result, key, p)
        paths["slices"].append(p)
        figs[f"Middle scored slice at {_level_name(entry)}"] = p.name
    paths["markdown"] = out / f"evaluation-{run}.md"
    paths["markdown"].write_text(to_markdown(result, command=command, figures=figs), encoding="utf-8")
    paths["json"] = out / f"evaluation-{run}.json"
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    public["summary"] = summary(result)
    paths["json"].write_text(json.dumps(public, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _noise_free_lines(levels: list[dict[str, Any]]) -> list[str]:
    """Where ``auto`` judged by recorrupted scans: their estimated gains against the true ones."""
    if not levels:
        return []
    lines = [
        "",
        "Where the long exposures barely see the noise (under 5 % of the raw reconstruction's "
        "residual against them), `auto` judged by recorrupted scans instead "
        "(`pipeline.recorrupt`): every candidate ran on the scan with more noise of the same "
        "statistics, scored against a plain reconstruction of a second scan with independent noise: "
        "an estimate of its PSNR against the noise-free reconstruction. Estimated and true gains over "
        "raw (dB); after the semicolon, the least gain at the scan's own noise ± its standard error, "
        "which `auto` needs two standard errors above 0:",
        "",
    ]
    table = []

    def least(nf: dict[str, Any], m: str) -> str:
        lb, se = (nf.get("at_scan_noise_db") or {}).get(m, (None, None))
        return "" if lb is None else f"; {lb:+.2f}" + ("" if se is None else f" ± {se:.2f}")

    for e in levels:
        nf, sc = e["noise_free_judge"], e["scores"]
        raw = sc["none"]["psnr"]
        gains = ", ".join(f"{m} {g:+.2f} ({sc[m]['psnr'] - raw:+.2f}{least(nf, m)})"
                          for m, g in nf["gain_psnr_db"].items() if m in sc)  # fmt: skip
        corr = nf["noise"]["neighbour_correlation"]
        rho = (e.get("judge_agreement") or {}).get("noise_free_spearman")
        table.append([_level_name(e), f"{nf['noise_share']:.3f}", f"{corr['along_rows']:.2f}", gains,
                      "-" if rho is None else f"{rho:.2f}", e["auto_winner"]])  # fmt: skip
    return lines + _table(["level", "noise share", "noise's neighbour correlation",
                           "estimated gain (true gain)", "Spearman", "auto takes"], table)  # fmt: skip
