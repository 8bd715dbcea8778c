"""Command-line glue: ``lowdose-tomo enhance`` and ``lowdose-tomo export``.

Wire into the main parser with::

    p = sub.add_parser("enhance", help="enhance a Data Exchange file offline")
    configure_parser(p); p.set_defaults(func=run)
    p = sub.add_parser("export", help="export a raw run from Tiled to Data Exchange")
    configure_export_parser(p); p.set_defaults(func=run_export)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._argtypes import count, positive_float
from .io import DataExchangeError

__all__ = ["configure_export_parser", "configure_parser", "run", "run_export"]


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``lowdose-tomo enhance`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A (sub)parser.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    from ..pipeline import AUTO_WITHOUT_PAIRS, DEFAULT_TOLERANCE, METHODS, N2I_OPTIONS
    from ..pipeline import PROJECTION_TRAINING as TRAINING
    from ..pipeline.auto import AUTO_BUDGET_S, N2I_SHARE
    from ..pipeline.choice import WHOLE_SCAN_SHARE

    parser.description = (
        "Enhance and reconstruct a short-exposure Data Exchange file with the package's scan pipeline "
        "(bluesky_lowdose.pipeline.enhance_scan): flat/dark correction, the method's projection step "
        "(e.g. a CNN trained on long/short reference pairs), reconstruction and its slice step "
        "(e.g. Noise2Inverse). Writes the enhanced projections (or, for slice-only methods, the corrected "
        "input) and the enhanced reconstruction as Data Exchange."
    )
    parser.add_argument("file", help="short-exposure Data Exchange file (.h5) with its flats/darks")
    parser.add_argument(
        "--method",
        choices=("auto", *METHODS),
        default="auto",
        help="enhancement method (default auto: with long exposures, the candidates of "
        "pipeline.auto run on a slab and the long exposures choose, never a result below the raw "
        f"reconstruction; without them {AUTO_WITHOUT_PAIRS}); "
        f"{', '.join(k for k, v in METHODS.items() if v.pairs)} need "
        "reference pairs (--long, the file's /exchange/reference_long, or --model-in for the CNN methods)",
    )
    parser.add_argument(
        "--long",
        default=None,
        metavar="FILE_LONG.h5",
        help="long-exposure Data Exchange file (a few angles, own flats/darks); not needed when FILE holds "
        "/exchange/reference_long (lowdose-tomo export) or for methods without pairs",
    )
    parser.add_argument(
        "--reference-angles",
        type=float,
        nargs="+",
        default=None,
        metavar="DEG",
        help="use these reference angles only (degrees)",
    )
    parser.add_argument(
        "--tolerance",
        type=positive_float,
        default=DEFAULT_TOLERANCE,
        help=f"angle matching tolerance in degrees (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--model",
        choices=("unet", "paper"),
        default=None,
        help=f"projection network (default {TRAINING['model']})",
    )
    parser.add_argument(
        "--epochs",
        type=count(1),
        default=None,
        help=f"maximum training epochs of the projection network (default {TRAINING['epochs']})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every learned step (default 0)")
    parser.add_argument(
        "--patch-size", type=count(8), default=None, help="training patch edge, a multiple of 8 (default 32)"
    )
    parser.add_argument(
        "--stride", type=count(1), default=None, help="step between training patches (default 8)"
    )
    parser.add_argument(
        "--n2i-steps",
        type=count(1),
        default=None,
        help=f"Noise2Inverse training steps (default {N2I_OPTIONS['steps']})",
    )
    parser.add_argument(
        "--auto-budget",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help=f"method auto: seconds its candidates may take together; the winner's whole scan should end by "
        f"{1 + WHOLE_SCAN_SHARE:g} x it from their start (else the judge's next pick that would is taken) "
        f"(default {AUTO_BUDGET_S:g}; "
        f"Noise2Inverse trains for at most {N2I_SHARE * 100:g} %% of what is left when it starts)",
    )
    parser.add_argument("--out", default=None, help="output file (default: FILE_enhanced.h5 beside FILE)")
    parser.add_argument(
        "--save-model", default=None, metavar="M.keras", help="save the projection CNN (CNN methods)"
    )
    parser.add_argument(
        "--save-slice-model",
        default=None,
        metavar="S.keras",
        help="save the Noise2Inverse slice denoiser (n2i, hybrid)",
    )
    parser.add_argument(
        "--model-in", default=None, metavar="M.keras", help="use this projection CNN, do not train one"
    )
    parser.add_argument(
        "--theta-units",
        choices=("degrees", "radians"),
        default=None,
        help="units of angles stored without a 'units' attribute",
    )
    parser.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run the reconstruction as slab tasks on this Dask scheduler ('local': an in-process cluster)",
    )
    parser.add_argument(
        "--allow-external",
        action="store_true",
        help="follow HDF5 external links / external storage in the input (refused by default)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    return parser


def _default_out(path: str) -> Path:
    p = Path(path)
    return p.with_name(f"{p.stem}_enhanced{p.suffix or '.h5'}")


def run(args: argparse.Namespace) -> int:
    """Run ``lowdose-tomo enhance``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 for bad input or an output that cannot be written (the message goes to
        stderr; checked before any training).
    """
    from ..model import TrainingError
    from .offline import enhance_file

    out = Path(args.out) if args.out else _default_out(args.file)
    problem = check_output_path(out, overwrite=args.overwrite)  # before any training
    for option in ("save_model", "save_slice_model"):
        target = getattr(args, option, None)
        if problem is None and target:
            problem = check_output_path(target, overwrite=args.overwrite)
    if problem:
        return _fail("enhance", problem)
    engine = None
    if args.dask_scheduler:
        from ..engine import DaskEngine

        try:
            engine = DaskEngine(args.dask_scheduler)
        except OSError as err:
            return _fail("enhance", str(err))
    train_options = {k: v for k in ("patch_size", "stride") if (v := getattr(args, k, None)) is not None}
    n2i_steps = getattr(args, "n2i_steps", None)
    try:
        result = enhance_file(
            args.file,
            out,
            method=getattr(args, "method", "auto"),
            long=args.long,
            reference_angles=args.reference_angles,
            tolerance=args.tolerance,
            model=args.model,
            epochs=args.epochs,
            seed=args.seed,
            model_in=args.model_in,
            save_model=args.save_model,
            save_slice_model=getattr(args, "save_slice_model", None),
            n2i_options=None if n2i_steps is None else {"steps": n2i_steps},
            theta_units=args.theta_units,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            train_options=train_options,
            allow_external=args.allow_external,
            mapper=None if engine is None else engine.map,
            auto_budget_s=getattr(args, "auto_budget", None),
        )
    except (DataExchangeError, OSError, ValueError, TrainingError) as err:
        print(f"lowdose-tomo enhance: error: {err}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            print(f"dask: {engine.report()}", file=sys.stderr)
            engine.close()
    for note in result.provenance["input"]["notes"]:
        print(f"note: {note}", file=sys.stderr)
    stats = result.provenance["photon_statistics"]
    if not stats["available"]:
        print(f"note: no photon statistics ({stats['reason']})", file=sys.stderr)
    enhancer = result.provenance.get("enhancer") or {}
    denoiser = result.provenance.get("slice_denoiser") or {}
    summary = {
        "out": str(result.path),
        "method": result.method,
        "shape": list(result.shape),
        "projections_enhanced": result.projections_enhanced,
        "volume_shape": list(result.volume_shape),
        "reference_theta": result.reference_theta,
        "mse_short": result.mse_short,
        "mse_enhanced": result.mse_enhanced,
        "model_hash": enhancer.get("model_hash"),
        "slice_model_hash": denoiser.get("model_hash"),
        "quality": result.scan.quality,
        "auto": (result.scan.provenance.get("auto") or {}).get("winner"),
        "warnings": result.scan.warnings,
    }
    for warning in result.scan.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        what = "enhanced" if result.projections_enhanced else "corrected (not enhanced)"
        n, rows, cols = result.shape
        print(f"method     {result.method}")
        print(f"{what} {n} projections {rows}x{cols} -> {result.path}:/exchange/data")
        z, y, x = result.volume_shape
        print(f"volume     {z}x{y}x{x} -> {result.path}:/exchange_1/data")
        if result.reference_theta:
            print(f"references {', '.join(f'{t:g}' for t in result.reference_theta)} deg")
            for t, s, e in zip(result.reference_theta, result.mse_short, result.mse_enhanced, strict=True):
                print(f"  {t:8.3f} deg  MSE vs long: short {s:.3g}  enhanced {e:.3g}")
        for line in quality_lines(result.scan.quality, result.scan.provenance.get("auto")):
            print(line)
    return 0


def quality_lines(quality: dict | None, auto: dict | None = None) -> list[str]:
    """The long exposures' judgement of a result, as lines for a terminal.

    Parameters
    ----------
    quality : dict or None
        :attr:`bluesky_lowdose.pipeline.ScanResult.quality`.
    auto : dict, optional
        The ``auto`` record of the provenance (its candidates and winner).

    Returns
    -------
    list of str
        Nothing without a judgement.
    """
    if not quality:
        return []
    e, r = quality["enhanced"], quality["raw"]
    ceiling = quality.get("ceiling_psnr_db")
    angles = ", ".join(f"{a:g}" for a in e["angles_deg"])
    lines = [
        f"quality    vs long exposures at {angles} deg"
        + (" (held out of training)" if quality.get("held_out") else "")
        + f": enhanced {e['psnr_db']:.2f} dB / SSIM {e['ssim']:.3f}, raw {r['psnr_db']:.2f} dB / "
        f"SSIM {r['ssim']:.3f}"
        + ("" if ceiling is None else f" (long frames' own noise: {ceiling:.1f} dB for a perfect volume)")
    ]
    if auto:
        for m, c in auto.get("candidates", {}).items():
            gain = c.get("gain_psnr_db")
            what = (
                c.get("status") if gain is None else f"{gain:+.2f} dB / {c['gain_ssim']:+.3f} SSIM over raw"
            )
            lines.append(f"  auto     {m:12s} {what}")
        lines.append(f"  auto chose {auto.get('winner')}: {auto.get('why')}")
    return lines


def configure_export_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``lowdose-tomo export`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A (sub)parser.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    from .runs import EXPORT_EXPOSURES

    parser.description = (
        "Export a raw low-dose run from Tiled to a Data Exchange HDF5 file (API key from $TILED_API_KEY)."
    )
    parser.add_argument("out", help="output Data Exchange file (.h5)")
    parser.add_argument("--tiled-uri", required=True, help="Tiled server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--uid", required=True, help="run uid (or scan_id, or -1 for the latest run)")
    parser.add_argument("--catalog", default="raw", help="run catalog (default raw)")
    parser.add_argument(
        "--exposure",
        choices=EXPORT_EXPOSURES,
        default="both",
        help="both (default): short rotation + reference pairs; short: plain Data Exchange of the "
        "rotation; long: the long-exposure references (the --long file of enhance)",
    )
    parser.add_argument("--compression", default=None, help="h5py compression of the frames, e.g. gzip")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    return parser


#: Compression filters ``export`` accepts (h5py's built-in ones).
COMPRESSIONS = ("gzip", "lzf")


def _fail(command: str, message: str) -> int:
    print(f"lowdose-tomo {command}: error: {message}", file=sys.stderr)
    return 2


def check_output_path(out: str | os.PathLike[str], *, overwrite: bool) -> str | None:
    """Why ``out`` cannot be written, or None: checked before any work (no traceback later).

    Parameters
    ----------
    out : str or os.PathLike
        The output file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    str or None
        The reason, or None when the file can be written.
    """
    path = Path(out)
    if str(out).strip() == "":
        return "the output file name is empty"
    if path.is_dir():
        return f"{path} is a directory; give a file name"
    if path.exists() and not overwrite:
        return f"{path} exists (pass --overwrite to replace it)"
    parent = path.parent
    if not parent.exists():
        return f"the output directory {parent} does not exist"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the output directory {parent} is not writable"
    return None


def _run_node(catalog: Any, uid: str) -> Any:
    """The run named by a uid (or its prefix), a scan_id, or -1; refuses ambiguous scan ids."""
    from tiled.queries import Key

    if uid.lstrip("-").isdigit():
        number = int(uid)
        if number < 0:
            return catalog[number]  # -1: the latest run
        found = catalog.search(Key("start.scan_id") == number)
        uids = list(found)
        if len(uids) > 1:
            raise LookupError(
                f"scan_id {number} names {len(uids)} runs ({', '.join(u[:8] for u in uids[:5])}"
                f"{', ...' if len(uids) > 5 else ''}): give the run uid"
            )
        if not uids:
            raise LookupError(f"no run with scan_id {number}")
        return found[uids[0]]
    return catalog[uid]


def run_export(args: argparse.Namespace) -> int:
    """Run ``lowdose-tomo export``.

    Every user mistake (empty or ambiguous ``--uid``, unknown catalog, bad compression, an output
    that cannot be written, Tiled down, a wrong or missing key) is a one-line message and exit
    status 2, never a traceback; all that can be checked is checked before connecting.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`configure_export_parser`.

    Returns
    -------
    int
        0 on success, 2 when the run cannot be found or exported (message on stderr).
    """
    import httpx
    from tiled.client.utils import ClientError

    from ..storage import connect
    from .runs import export_run

    if not args.uid.strip():
        return _fail("export", "--uid is empty: give a run uid, a scan_id or -1 (the latest run)")
    if args.compression is not None and args.compression not in COMPRESSIONS:
        return _fail("export", f"--compression {args.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    problem = check_output_path(args.out, overwrite=args.overwrite)
    if problem:
        return _fail("export", problem)
    try:
        client = connect(args.tiled_uri, api_key=os.environ.get("TILED_API_KEY"), create=False)
        if args.catalog not in client:
            return _fail(
                "export", f"no catalog {args.catalog!r} on {args.tiled_uri} (have: {', '.join(client)})"
            )
        try:
            run_node = _run_node(client[args.catalog], args.uid.strip())
        except (KeyError, LookupError) as err:
            ambiguous = not isinstance(err, KeyError) and err.args
            detail = err.args[0] if ambiguous else f"no run {args.uid!r}"
            return _fail("export", f"{detail} in catalog {args.catalog!r}")
        path = export_run(
            run_node, args.out, exposure=args.exposure, overwrite=args.overwrite, compression=args.compression
        )
    except ClientError as err:
        status = err.response.status_code
        if status in (401, 403):
            return _fail(
                "export", f"Tiled at {args.tiled_uri} refused the API key (HTTP {status}): set TILED_API_KEY"
            )
        return _fail("export", f"Tiled at {args.tiled_uri} answered HTTP {status}: {err}")
    except httpx.HTTPError as err:
        return _fail("export", f"cannot reach Tiled at {args.tiled_uri}: {err}")
    except RuntimeError as err:  # tiled's client: "This server requires API key authentication."
        if "API key" not in str(err):
            raise
        return _fail("export", f"Tiled at {args.tiled_uri} requires an API key: set TILED_API_KEY")
    except (DataExchangeError, OSError, ValueError) as err:
        return _fail("export", str(err))
    print(f"exported run {run_node.metadata['start']['uid']} ({args.exposure}) -> {path}")
    return 0
