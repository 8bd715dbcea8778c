"""``lowdose-tomo``: the command-line entry point.

Subcommands: ``demo`` (the main job), ``serve`` (serve a data directory with Tiled) and
``evaluate`` (the synthetic benchmark of the enhancer).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(
        data_dir=Path(args.data_dir),
        tiled_uri=args.tiled_uri,
        size=args.size,
        angles=args.angles,
        seed=args.seed,
        progress=not args.no_progress,
    )
    summary = run_demo(cfg)
    if not args.json:
        dose = summary["dose"]
        print(f"raw run        {summary['raw_uid']}  ({summary['frames']} projections)")
        print(f"tiled          {summary['tiled_uri']}  catalog 'raw'")
        print(f"data directory {summary['data_dir']}")
        print(
            f"dose           {dose['sample_exposure_s']:.0f} s on sample vs "
            f"{dose['conventional_exposure_s']:.0f} s conventional: {dose['dose_ratio']:.1f}x less"
        )
        print("timings        " + ", ".join(f"{k}={v:.2f}" for k, v in summary["timings"].items()))
    if args.json:
        print(json.dumps(summary))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .storage import TiledServer

    server = TiledServer(args.data_dir, port=args.port, host=args.host).start()
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
    parser = argparse.ArgumentParser(prog="lowdose-tomo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the simulated TXM into Tiled")
    demo.add_argument("--tiled-uri", default=None, help="use this Tiled server (key from $TILED_API_KEY)")
    demo.add_argument("--data-dir", default="lowdose-data", help="data directory (default: ./lowdose-data)")
    demo.add_argument("--size", type=int, default=128, help="phantom/detector size in pixels (default 128)")
    demo.add_argument(
        "--angles", type=int, default=181, help="number of projections over 180 deg (default 181)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of phantom and noise")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)

    serve = sub.add_parser("serve", help="serve a data directory with Tiled")
    serve.add_argument("--data-dir", required=True, help="data directory")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(func=_serve)

    try:
        from .evaluation import cli as evaluation_cli
    except ImportError:  # pragma: no cover - evaluation not installed
        evaluation_cli = None
    if evaluation_cli is not None:
        ev = sub.add_parser("evaluate", help="the paper's synthetic benchmark of the enhancer")
        evaluation_cli.configure_parser(ev)
        ev.set_defaults(func=evaluation_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``lowdose-tomo``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
