"""``lowdose-tomo``: the command-line entry point.

Subcommands: ``demo`` (the main job), ``serve`` (serve a data directory with Tiled),
``evaluate`` (the synthetic benchmark of the enhancer), ``ioc`` (the simulated microscope
as a Channel Access IOC), ``enhancer`` (the 0MQ service), ``queue``, ``enhance``, ``export``
``watch`` (a scan's live preview) and ``models`` (the model registry).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ._argtypes import count as _count
from ._argtypes import method as _method
from ._argtypes import port as _port
from ._argtypes import positive_float as _positive_float

__all__ = ["main"]


def _data_dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be a data directory (checked before any server starts), or None."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        return f"--data-dir {p} is a file, not a directory"
    try:
        from .storage.server import private_directory

        private_directory(p)  # 0700: not world-readable because this check made it first
    except OSError as exc:
        return f"cannot create the data directory {p}: {exc.strerror or exc}"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"the data directory {p} is not writable"
    return None


def _error(command: str, message: str, code: int = 2) -> int:
    print(f"lowdose-tomo {command}: error: {message}", file=sys.stderr)
    return code


def _demo(args: argparse.Namespace) -> int:
    import httpx

    from .demo import DemoConfig, DemoInterrupted, DemoScanFailed, run_demo
    from .storage import TiledServerError

    problem = _data_dir_problem(args.data_dir)
    if problem:
        return _error("demo", problem)

    cfg = DemoConfig(
        data_dir=Path(args.data_dir),
        tiled_uri=args.tiled_uri,
        size=args.size,
        angles=args.angles,
        seed=args.seed,
        progress=not args.no_progress,
        enhance=not args.no_enhance,
    )
    if args.epochs is not None:
        cfg.train_kwargs["epochs"] = args.epochs
    if args.method is not None:
        cfg.method = args.method
    if args.n2i_steps is not None:
        cfg.n2i_options["steps"] = args.n2i_steps
    if args.auto_budget is not None:
        cfg.auto_budget_s = args.auto_budget
    cfg.compare = not args.no_compare
    cfg.dask_scheduler = args.dask_scheduler
    cfg.registry = args.registry
    try:
        summary = run_demo(cfg)
    except DemoInterrupted as exc:
        return _error("demo", str(exc), code=130)
    except DemoScanFailed as exc:
        return _error("demo", str(exc), code=1)
    except TiledServerError as exc:
        return _error("demo", f"the embedded Tiled server did not start: {exc}", code=1)
    except httpx.HTTPError as exc:
        return _error("demo", f"cannot reach Tiled at {args.tiled_uri}: {exc}", code=1)
    except OSError as exc:
        from .engine import SchedulerUnreachable

        if isinstance(exc, SchedulerUnreachable):
            return _error("demo", str(exc), code=1)
        raise
    if not args.json:
        dose = summary["dose"]
        print(f"raw run        {summary['raw_uid']}  ({summary['frames']} projections, catalog 'raw')")
        if summary.get("processed_uid"):
            status = summary["status"]
            print(f"processed run  {summary['processed_uid']}  (catalog 'processed', status {status})")
            for reason in summary.get("reasons", []):
                print(f"               ! {reason}")
            if summary.get("registry"):
                first = summary.get("first_result_s")
                when = "" if first is None else f"; first result {first:.1f} s after the last frame"
                print(f"model          started from registered model {summary['registry']}{when}")
        print(f"tiled          {summary['tiled_uri']}")
        print(f"data directory {summary['data_dir']}")
        print(
            f"dose           {dose['sample_exposure_s']:.0f} s on sample vs "
            f"{dose['conventional_exposure_s']:.0f} s conventional: {dose['dose_ratio']:.1f}x less"
        )
        m = summary.get("metrics", {})
        from .dxchange.cli import quality_lines

        for line in quality_lines(summary.get("quality"), summary.get("auto")):
            print(line)
        for warning in summary.get("warnings", []):
            print(f"WARNING        {warning}")
        comparison = summary.get("comparison")
        if comparison:
            print("reconstruction inside the object vs the noise-free reference (the simulator's truth):")
            for name, sc in comparison["scores"].items():
                print(f"  {name:<28} PSNR {sc['psnr']:6.2f} dB   SSIM {sc['ssim']:.3f}")
            for warning in summary.get("comparison_warnings", []):
                print(f"WARNING        {warning}")
        elif "recon_psnr_raw" in m:
            print(
                "reconstruction vs noise-free reference: "
                f"raw PSNR {m['recon_psnr_raw']:.2f} dB / SSIM {m['recon_ssim_raw']:.3f}, "
                f"enhanced PSNR {m.get('recon_psnr_enhanced', float('nan')):.2f} dB / "
                f"SSIM {m.get('recon_ssim_enhanced', float('nan')):.3f}"
            )
        for path in summary.get("figures", []):
            print(f"figure         {path}")
        print("timings (s)    " + ", ".join(f"{k}={v:.1f}" for k, v in summary["timings"].items()))
    if args.json:
        print(json.dumps(summary))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .storage import TiledServer, TiledServerError

    problem = _data_dir_problem(args.data_dir)
    if problem:
        return _error("serve", problem)
    try:
        server = TiledServer(args.data_dir, port=args.port, host=args.host).start()
    except TiledServerError as exc:
        return _error("serve", str(exc), code=1)
    print(
        f"Tiled serving {server.layout.root} at {server.uri} (API key in {server.layout.root}/.tiled_api_key"
        " unless TILED_API_KEY is set). Ctrl-C to stop.",
        flush=True,
    )

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lowdose-tomo``."""
    from .demo import DemoConfig
    from .pipeline import N2I_OPTIONS
    from .pipeline.auto import AUTO_BUDGET_S
    from .pipeline.choice import WHOLE_SCAN_SHARE

    parser = argparse.ArgumentParser(prog="lowdose-tomo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the simulated TXM into Tiled")
    demo.add_argument("--tiled-uri", default=None, help="use this Tiled server (key from $TILED_API_KEY)")
    demo.add_argument("--data-dir", default="lowdose-data", help="data directory (default: ./lowdose-data)")
    demo.add_argument(
        "--size", type=_count(8), default=128, help="phantom/detector size in pixels (default 128)"
    )
    demo.add_argument(
        "--angles",
        type=_count(2),
        default=181,
        help="number of projections over 180 deg (default 181)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of phantom and noise")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.add_argument("--no-enhance", action="store_true", help="acquire only (no streaming enhancement)")
    demo.add_argument(
        "--epochs",
        type=_count(1),
        default=None,
        help="training epochs of the projection CNN (default 15)",
    )
    demo.add_argument(
        "--method",
        type=_method,
        default=None,
        help="pipeline method of the streaming enhancer (default auto)",
    )
    demo.add_argument(
        "--n2i-steps",
        type=_count(1),
        default=None,
        help=f"Noise2Inverse steps (default: the pipeline's, {N2I_OPTIONS['steps']})",
    )
    demo.add_argument(
        "--auto-budget",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help=f"method auto: seconds its candidates may take together; the winner's whole scan should end by "
        f"{1 + WHOLE_SCAN_SHARE:g} x it from their start (else the judge's next pick that would is taken) "
        f"(default {DemoConfig.auto_budget_s:g}, "
        f"so that Noise2Inverse trains its {N2I_OPTIONS['steps']} steps here; the pipeline's own default "
        f"is {AUTO_BUDGET_S:g})",
    )
    demo.add_argument(
        "--registry", choices=("auto", "record", "only", "off"), default="auto",
        help="model registry: auto (default) starts from the best registered model of this instrument "
        "(a second demo in the same data directory finds the first's), record trains from scratch",
    )  # fmt: skip
    demo.add_argument(
        "--no-compare", action="store_true", help="skip the paper's method and the simulated full-dose scan"
    )
    demo.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="reconstruct as slab tasks on this Dask scheduler ('local': an in-process cluster)",
    )
    demo.set_defaults(func=_demo)

    serve = sub.add_parser("serve", help="serve a data directory with Tiled")
    serve.add_argument("--data-dir", required=True, help="data directory")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; refused if taken)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(func=_serve)

    from . import queue as queue_cli
    from .dxchange import cli as dx_cli
    from .evaluation import cli as evaluation_cli

    ev = sub.add_parser("evaluate", help="the paper's synthetic benchmark of the enhancer")
    evaluation_cli.configure_parser(ev)
    ev.set_defaults(func=evaluation_cli.run)

    enh = sub.add_parser("enhance", help="enhance a Data Exchange file offline")
    dx_cli.configure_parser(enh)
    enh.set_defaults(func=dx_cli.run)

    exp = sub.add_parser("export", help="export a raw run from Tiled to Data Exchange")
    dx_cli.configure_export_parser(exp)
    exp.set_defaults(func=dx_cli.run_export)

    q = sub.add_parser("queue", help="start/stop/status of the queue stack (Tiled, Redis, RE Manager)")
    queue_cli.configure_parser(q)
    q.set_defaults(func=queue_cli.run)

    from .ioc import cli as ioc_cli

    ioc = sub.add_parser("ioc", help="serve the simulated TXM over EPICS Channel Access (caproto)")
    ioc_cli.configure_parser(ioc)
    ioc.set_defaults(func=ioc_cli.run)

    from . import service as service_cli

    svc = sub.add_parser("enhancer", help="run the streaming enhancer as a service fed by a 0MQ proxy")
    service_cli.configure_parser(svc)
    svc.set_defaults(func=service_cli.run)

    from . import registry_cli
    from . import watch as watch_cli

    models = sub.add_parser("models", help="list, show, export and import models of the registry in Tiled")
    registry_cli.configure_parser(models)
    models.set_defaults(func=registry_cli.run)

    w = sub.add_parser("watch", help="draw a scan's live preview from Tiled into a PNG as it refreshes")
    watch_cli.configure_parser(w)
    w.set_defaults(func=watch_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``lowdose-tomo``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _error(args.command, "interrupted (Ctrl-C)", code=130)
    except Exception as exc:
        # the last safety net: a one-line message; -v shows where it came from
        if args.verbose:
            raise
        return _error(args.command, f"{type(exc).__name__}: {exc} (run with -v for the traceback)", code=1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
