"""``lowdose-tomo watch``: the live preview of a scan, drawn from Tiled as it refreshes.

The streaming enhancer publishes the ``preview`` stream of each processed run while the rotation
runs (three central orthogonal slices of the raw frames back-projected so far, see
:class:`~bluesky_lowdose.recon.preview.OrthoSlices`). ``watch`` follows one processed run, draws
each new preview into a PNG file (replaced atomically: an image viewer that reloads shows it
refreshing) and stops once the run has its stop document.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["configure_parser", "draw_preview", "latest_preview", "run"]

PLANES = ("axial", "coronal", "sagittal")


def _fail(message: str) -> int:
    print(f"lowdose-tomo watch: error: {message}", file=sys.stderr)
    return 2


def latest_preview(run: Any) -> dict[str, Any] | None:
    """The last preview of a processed run as read from Tiled, or None before the first.

    Parameters
    ----------
    run : tiled.client.container.Container
        A processed run node (read it again for each call: the stream grows).

    Returns
    -------
    dict or None
        ``axial``, ``coronal``, ``sagittal`` (arrays), ``frames`` (back-projected in it),
        ``angle_deg`` (the last one's angle), ``index`` (the row) and ``rows`` (previews so far).
    """
    from .storage import stream_array

    if "preview" not in run:
        return None
    # the writer appends a batch's image arrays first and its table of numbers last: rows the
    # table holds are complete, and each piece is read at one index (the stream may grow meanwhile)
    n = int(stream_array(run, "preview", "frames").shape[0])
    if n == 0:
        return None
    out: dict[str, Any] = {"index": n - 1, "rows": n}
    for key in PLANES:
        out[key] = np.asarray(stream_array(run, "preview", key)[n - 1])
    for key in ("frames", "angle_deg"):
        out[key] = np.asarray(stream_array(run, "preview", key)[n - 1]).item()
    return out


def draw_preview(preview: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Draw the three slices side by side into a PNG (written to a temporary name, then renamed).

    Parameters
    ----------
    preview : dict
        ``axial``, ``coronal`` and ``sagittal`` arrays (as :func:`latest_preview` returns).
    path : str or Path
        The figure file.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    planes = [np.asarray(preview[k], np.float32) for k in PLANES]
    values = np.concatenate([p.ravel() for p in planes])
    lo, hi = (float(v) for v in np.percentile(values, [1.0, 99.5]))
    if not hi > lo:
        hi = lo + 1.0
    widths = [p.shape[1] for p in planes]
    fig = Figure(figsize=(4.0 * len(planes), 4.4), layout="constrained")
    axes = fig.subplots(1, len(planes), width_ratios=widths)
    names = ("axial (central row)", "coronal (y = centre)", "sagittal (x = centre)")
    for ax, plane, name in zip(axes, planes, names, strict=True):
        ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def _processed_run(catalog: Any, uid: str | None) -> Any:
    """The processed run named by ``uid`` (its own uid, or its raw run's), or the latest."""
    from tiled.queries import Key

    if uid is None:
        if len(catalog) == 0:
            raise LookupError("no processed run yet")
        return catalog.values().last()
    if uid in catalog:
        return catalog[uid]
    found = catalog.search(Key("start.original_run_uid") == uid)
    if len(found) == 0:
        raise LookupError(f"no processed run {uid!r}, and none made from a raw run {uid!r}")
    return found.values().last()


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``lowdose-tomo watch`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A (sub)parser.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.description = (
        "Draw the live preview of a scan (the processed run's 'preview' stream) into a PNG that is "
        "replaced as new previews arrive; stops when the run ends (API key from $TILED_API_KEY)."
    )
    parser.add_argument(
        "uid", nargs="?", default=None,
        help="processed run uid, or the raw run's uid (default: the latest processed run)",
    )  # fmt: skip
    parser.add_argument("--latest", action="store_true", help="the latest processed run (the default)")
    parser.add_argument("--tiled-uri", required=True, help="Tiled server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--out", default="preview.png", help="figure file (default ./preview.png)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    parser.add_argument("--once", action="store_true", help="draw the latest preview once and exit")
    parser.add_argument(
        "--timeout", type=float, default=None,
        help="give up after this many seconds without the run ending (default: never)",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``lowdose-tomo watch``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`configure_parser`.

    Returns
    -------
    int
        0 once the run has ended (or after ``--once``), 2 on a user error (one line on stderr),
        3 when ``--timeout`` passed first.
    """
    import httpx
    from tiled.client.utils import ClientError

    from .storage import PROCESSED, connect

    if args.uid is not None and args.latest:
        return _fail("give a uid or --latest, not both")
    if not args.interval > 0:
        return _fail(f"--interval must be > 0 seconds, got {args.interval}")
    out = Path(args.out).expanduser()
    if not out.parent.is_dir():
        return _fail(f"--out {out}: no directory {out.parent}")
    try:
        client = connect(args.tiled_uri, api_key=os.environ.get("TILED_API_KEY"), create=False)
        if PROCESSED not in client:
            return _fail(f"no {PROCESSED!r} catalog on {args.tiled_uri}: nothing was enhanced there yet")
        uid = _processed_run(client[PROCESSED], args.uid).metadata["start"]["uid"]
    except LookupError as exc:
        return _fail(str(exc.args[0]) if exc.args else repr(exc))
    except (ClientError, httpx.HTTPError, OSError) as exc:
        return _fail(f"Tiled at {args.tiled_uri}: {exc}")
    t0 = time.monotonic()
    shown = -1
    print(f"watching processed run {uid} -> {out}", flush=True)
    errors = 0
    while True:
        try:
            node = client[PROCESSED][uid]  # again each time: the streams grow
            md = node.metadata
            preview = latest_preview(node)
        except (ClientError, httpx.HTTPError) as exc:  # a poll that failed: the next may not
            errors += 1
            if errors >= 5:
                return _fail(f"Tiled at {args.tiled_uri}: {exc} ({errors} polls in a row failed)")
            time.sleep(args.interval)
            continue
        errors = 0
        total = (md["start"].get("lowdose") or {}).get("num_angles")
        ended = md.get("stop") is not None
        if preview is not None and preview["index"] != shown:
            shown = preview["index"]
            of = f" of {total}" if total else ""
            state = "run ended" if ended else "live"
            title = (f"{uid[:8]} · {preview['frames']}{of} frames · last angle {preview['angle_deg']:.1f}° · "
                     f"{state}")  # fmt: skip
            draw_preview(preview, out, title=title)
            print(f"preview {shown + 1}: {preview['frames']}{of} frames ({state}) -> {out}", flush=True)
        if args.once:
            if preview is None:
                return _fail(f"processed run {uid} has no preview (yet)")
            return 0
        if ended:
            status = md["stop"].get("exit_status")
            print(f"processed run {uid} ended ({status})", flush=True)
            return 0
        if args.timeout is not None and time.monotonic() - t0 > args.timeout:
            print(f"lowdose-tomo watch: run {uid} still open after {args.timeout} s", file=sys.stderr)
            return 3
        time.sleep(args.interval)
