"""Markdown tables, figures and the machine record of an evaluation run."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["machine_info", "methods", "summary", "to_json", "to_markdown", "write_report"]

_METHOD_ORDER = ("noisy", "full-dose", "cnn-2", "cnn-3", "cnn-4", "median", "tv", "bm3d")
_BASELINES = ("median", "tv", "bm3d")


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
        Method names.
    """
    found = set(result["levels"][0]["scores"]) if result["levels"] else set()
    ordered = [m for m in _METHOD_ORDER if m in found]
    return ordered + sorted(found - set(ordered))


def _level_name(entry: dict[str, Any]) -> str:
    if "level" in entry:
        return f"{100 * entry['level']:g} %"
    return f"1/{entry['dose_ratio']:g} dose"


def _key(entry: dict[str, Any]) -> str:
    return f"{entry['level']:g}" if "level" in entry else f"{entry['dose_ratio']:g}"


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Summarise a result compactly: per level, PSNR/SSIM of every method.

    ``inf`` PSNR is written as None (JSON has no infinity).

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.

    Returns
    -------
    dict
        ``{"mode", "size", "angles", "backend", "seconds", "levels": {level: {method:
        {"psnr", "ssim"}}}, "cnn_beats": {level: {"noisy", "best_baseline", "paper"}}}``.
    """
    cfg = result["config"]
    levels: dict[str, Any] = {}
    beats: dict[str, Any] = {}
    for entry in result["levels"]:
        key = _key(entry)
        scores = entry["scores"]
        levels[key] = {
            m: {k: (None if not math.isfinite(v) else round(float(v), 4)) for k, v in s.items()}
            for m, s in scores.items()
        }
        cnns = [m for m in scores if m.startswith("cnn-")]
        if cnns:
            best_cnn = max(cnns, key=lambda m: scores[m]["ssim"])
            base = [m for m in _BASELINES if m in scores]
            best_base = max(base, key=lambda m: scores[m]["ssim"]) if base else None
            beats[key] = {
                "cnn": best_cnn,
                "noisy": bool(scores[best_cnn]["ssim"] > scores["noisy"]["ssim"]),
                "best_baseline": best_base,
                "beats_best_baseline": (
                    None if best_base is None else bool(scores[best_cnn]["ssim"] > scores[best_base]["ssim"])
                ),
            }
            if "paper_ssim" in entry:
                beats[key]["beats_paper"] = bool(scores[best_cnn]["ssim"] > entry["paper_ssim"]["enhanced"])
            if "full-dose" in scores:
                beats[key]["matches_full_dose"] = bool(
                    scores[best_cnn]["ssim"] >= scores["full-dose"]["ssim"]
                )
    return {
        "mode": cfg["mode"],
        "size": cfg["size"],
        "angles": cfg["angles"],
        "backend": result["reconstruction"]["backend"],
        "seconds": result["seconds"].get("total"),
        "levels": levels,
        "cnn_beats": beats,
    }


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


def to_markdown(
    result: dict[str, Any], *, command: str | None = None, figures: dict[str, str] | None = None
) -> str:
    """Format the results as Markdown: SSIM and PSNR tables, phase separation, timings, machine.

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
    gaussian = cfg["mode"] == "gaussian"
    lines = [f"## Results: {cfg['mode']} mode, {cfg['size']}^3 voxels, {cfg['angles']} angles", ""]
    rows = result["scored_slices"]
    lines.append(
        f"Scored slices {rows[0]}-{rows[1] - 1} of {cfg['size']}; reconstruction "
        f"`{result['reconstruction']['backend']}` with a {result['reconstruction']['filter']} filter; "
        f"CNN `{cfg['model']}`, {cfg['epochs']} epochs, trained at {result['train_angles_deg']} degrees; "
        f"seed {cfg['seed']}."
    )
    lines.append("")
    for metric, digits in (("ssim", 3), ("psnr", 2)):
        unit = " (dB)" if metric == "psnr" else ""
        head = ["level", *[f"{m}" for m in ms]]
        if gaussian and metric == "ssim":
            head += ["paper noisy", "paper enhanced"]
        lines.append(f"### {metric.upper()}{unit} against R_o")
        lines.append("")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for entry in result["levels"]:
            sc = entry["scores"]
            best = max((m for m in ms if m not in ("noisy",)), key=lambda m: sc[m][metric], default=None)
            cells = [_level_name(entry)]
            for m in ms:
                txt = _fmt(sc[m][metric], digits)
                cells.append(f"**{txt}**" if m == best else txt)
            if gaussian and metric == "ssim":
                paper = entry.get("paper_ssim")
                cells += [f"{paper['noisy']:.2f}", f"{paper['enhanced']:.2f}"] if paper else ["-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("### Verdict per level (best CNN by SSIM)")
    lines.append("")
    verdict = summary(result)["cnn_beats"]
    head = ["level", "CNN", "beats noisy", "best baseline", "beats it"]
    if gaussian:
        head.append("beats paper")
    else:
        head.append("matches full dose")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for entry in result["levels"]:
        v = verdict.get(_key(entry))
        if not v:
            continue
        yn = {True: "yes", False: "no", None: "-"}
        extra = v.get("beats_paper") if gaussian else v.get("matches_full_dose")
        lines.append(
            f"| {_level_name(entry)} | {v['cnn']} | {yn[v['noisy']]} | {v['best_baseline'] or '-'} | "
            f"{yn[v['beats_best_baseline']]} | {yn[extra]} |"
        )
    lines.append("")
    lines.append("### Phase separation (|mean_a - mean_b| / (std_a + std_b); > 1: resolved)")
    lines.append("")
    lines.append("Phases: 0 background, 1 cube, 2 spheres.")
    lines.append("")
    pairs = sorted({p for e in result["levels"] for s in e["separation"].values() for p in s})
    head = ["level", "method", *pairs]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for entry in result["levels"]:
        for m in ms:
            sep = entry["separation"][m]
            lines.append(
                "| "
                + " | ".join([_level_name(entry), m, *[_fmt(sep.get(p, float("nan")), 2) for p in pairs]])
                + " |"
            )
    lines.append("")
    params = {_level_name(e): e.get("baseline_parameters", {}) for e in result["levels"]}
    lines.append("Baseline parameters tuned on the training pairs (median size, TV weight, BM3D sigma): ")
    lines.append("")
    for lvl, p in params.items():
        lines.append(f"- {lvl}: " + ", ".join(f"{k} {v:.4g}" for k, v in p.items()))
    lines.append("")
    if figures:
        for caption, path in figures.items():
            lines += [f"![{caption}]({path})", ""]
    lines.append("### Run")
    lines.append("")
    mach = result.get("machine") or machine_info()
    if command:
        lines.append(f"- command: `{command}`")
    lines.append(
        f"- machine: `{mach['uname']}`; {mach['nproc']} cores; {mach['cpu']}; Python {mach['python']}"
    )
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    lines.append(f"- wall time: {secs}")
    lines.append("")
    return "\n".join(lines)


def _bars(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ms = methods(result)
    entries = result["levels"]
    names = [_level_name(e) for e in entries]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / (len(ms) + (1 if result["config"]["mode"] == "gaussian" else 0))
    x = np.arange(len(entries))
    for ax, metric in zip(axes, ("ssim", "psnr"), strict=True):
        for j, m in enumerate(ms):
            vals = [e["scores"][m][metric] for e in entries]
            ax.bar(x + (j - len(ms) / 2) * width, vals, width, label=m)
        if metric == "ssim" and result["config"]["mode"] == "gaussian":
            px = [i for i, e in enumerate(entries) if "paper_ssim" in e]
            if px:
                ax.scatter(
                    x[px],
                    [entries[i]["paper_ssim"]["enhanced"] for i in px],
                    marker="*",
                    s=120,
                    color="k",
                    zorder=5,
                    label="paper R_e",
                )
                ax.scatter(
                    x[px],
                    [entries[i]["paper_ssim"]["noisy"] for i in px],
                    marker="x",
                    s=60,
                    color="k",
                    zorder=5,
                    label="paper R_n",
                )
        ax.set_xticks(x, names)
        ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
        ax.set_title(f"{metric.upper()} of reconstructions vs R_o")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(result: dict[str, Any], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig_data = result["_figures"][key]
    scores = next(e["scores"] for e in result["levels"] if _key(e) == key)
    cnns = [m for m in scores if m.startswith("cnn-")]
    base = [m for m in _BASELINES if m in scores]
    show = ["reference", "noisy"]
    if "full-dose" in scores:
        show.append("full-dose")
    if cnns:
        show.append(max(cnns, key=lambda m: scores[m]["ssim"]))
    if base:
        show.append(max(base, key=lambda m: scores[m]["ssim"]))
    ref = fig_data["slices"]["reference"]
    lo, hi = float(ref.min()), float(ref.max())
    pad = 0.25 * (hi - lo)
    fig, axes = plt.subplots(2, len(show), figsize=(3.2 * len(show), 6.4))
    for j, m in enumerate(show):
        ax = axes[0, j]
        ax.imshow(fig_data["slices"][m], cmap="gray", vmin=lo, vmax=hi)
        title = "R_o (clean)" if m == "reference" else m
        if m != "reference":
            title += f"\nSSIM {scores[m]['ssim']:.3f}, PSNR {scores[m]['psnr']:.1f} dB"
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        hx = axes[1, j]
        hx.hist(fig_data["values"][m], bins=120, range=(lo - pad, hi + pad), color="C0")
        hx.set_yscale("log")
        hx.set_xlabel("grey value")
        hx.set_title(f"histogram ({m})", fontsize=9)
    fig.suptitle(
        f"{result['config']['mode']} mode, level {_level_name_from_key(result, key)}: middle scored slice"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _level_name_from_key(result: dict[str, Any], key: str) -> str:
    return next(_level_name(e) for e in result["levels"] if _key(e) == key)


def write_report(
    result: dict[str, Any], out_dir: str | os.PathLike[str], *, command: str | None = None
) -> dict[str, Path]:
    """Write Markdown, JSON and PNG figures of ``result`` under ``out_dir``.

    Files: ``evaluation-<mode>.md``, ``evaluation-<mode>.json`` and
    ``figures/evaluation-<mode>-bars.png``, ``figures/evaluation-<mode>-slices-<level>.png``
    (for the second level, or the only one).

    Parameters
    ----------
    result : dict
        From :func:`~bluesky_lowdose.evaluation.run_evaluation`.
    out_dir : path
        Directory (created).
    command : str, optional
        Recorded in the Markdown.

    Returns
    -------
    dict
        ``{"markdown", "json", "bars", "slices"}`` paths.
    """
    out = Path(out_dir)
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    mode = result["config"]["mode"]
    result.setdefault("machine", machine_info())
    paths: dict[str, Path] = {}
    paths["bars"] = figdir / f"evaluation-{mode}-bars.png"
    _bars(result, paths["bars"])
    keys = [_key(e) for e in result["levels"]]
    key = keys[1] if len(keys) > 1 else keys[0]
    paths["slices"] = figdir / f"evaluation-{mode}-slices-{key}.png"
    _panel(result, key, paths["slices"])
    figs = {
        "SSIM and PSNR per level": f"figures/{paths['bars'].name}",
        f"Slices and histograms at {_level_name_from_key(result, key)}": f"figures/{paths['slices'].name}",
    }
    paths["markdown"] = out / f"evaluation-{mode}.md"
    paths["markdown"].write_text(to_markdown(result, command=command, figures=figs), encoding="utf-8")
    paths["json"] = out / f"evaluation-{mode}.json"
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
