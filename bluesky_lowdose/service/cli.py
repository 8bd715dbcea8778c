"""``lowdose-tomo enhancer``: its arguments and its exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._argtypes import count, method, positive_float
from .bus import parse_zmq_address
from .core import DEFAULT_TILED_URI, run_enhancer_service
from .report import ServiceError, ServiceReport

__all__ = ["configure_parser", "run"]

logger = logging.getLogger("bluesky_lowdose.service")


def _zmq(text: str) -> str:
    try:
        return parse_zmq_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``lowdose-tomo enhancer`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    """
    parser.description = (
        "Run the streaming enhancer as its own process, fed by a bluesky-0MQ-proxy; "
        "SIGTERM/Ctrl-C closes open runs as partial and exits."
    )
    parser.add_argument(
        "--zmq", required=True, type=_zmq, metavar="HOST:PORT",
        help="the 0MQ proxy's output address (bluesky-0MQ-proxy --out-address)",
    )  # fmt: skip
    parser.add_argument(
        "--tiled-uri", default=None,
        help=f"Tiled server for the processed runs (default {DEFAULT_TILED_URI}, as lowdose-tomo serve); "
        "API key from $TILED_API_KEY",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", default="lowdose-data",
        help="data directory: the processed runs' volumes and enhanced frames (<data-dir>/volumes unless "
        "--volume-dir), backups of processed runs if Tiled fails; without --tiled-uri also its API key "
        "file (default: ./lowdose-data)",
    )  # fmt: skip
    parser.add_argument(
        "--volume-dir", default=None, metavar="DIR",
        help="where the processed runs' volumes and enhanced frames are written as HDF5: a folder the Tiled "
        "server reads (its readable storage, tiled serve ... -r DIR), since Tiled serves them in place; "
        "lowdose-tomo serve --data-dir D reads D/volumes (default: <data-dir>/volumes)",
    )  # fmt: skip
    parser.add_argument("--method", type=method, default="auto", help="pipeline method (default auto)")
    parser.add_argument("--n2i-steps", type=count(1), default=None, help="Noise2Inverse training steps")
    parser.add_argument(
        "--epochs", type=count(1), default=15, help="training epochs of the projection CNN (default 15)"
    )
    parser.add_argument(
        "--preview-interval", type=float, default=5.0, metavar="S",
        help="seconds between live previews (stream 'preview', drawn by lowdose-tomo watch); 0: after "
        "every batch of frames; negative: no preview (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "--registry", choices=("auto", "record", "only", "off"), default="auto",
        help="model registry in Tiled: auto (default) publishes the best registered model's result of "
        "the run's instrument first, then fine-tunes it; record trains from scratch; only applies the "
        "registered model without training; off neither records nor reuses",
    )  # fmt: skip
    parser.add_argument(
        "--stop-after", type=count(1), default=None, metavar="N",
        help="exit after N runs have been processed (default: run until SIGTERM/Ctrl-C)",
    )  # fmt: skip
    parser.add_argument(
        "--ready-file", default=None, metavar="PATH",
        help="write this file once subscribed to the proxy (removed at exit)",
    )  # fmt: skip
    parser.add_argument(
        "--close-timeout", type=positive_float, default=600.0, metavar="S",
        help="seconds to wait for open runs when stopping (default 600)",
    )  # fmt: skip


def _api_key(args: argparse.Namespace) -> str | None:
    from ..storage.server import API_KEY_ENV, API_KEY_FILE

    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    if args.tiled_uri is None:  # the server of the data directory: its key file, never a new key
        path = Path(args.data_dir).expanduser() / API_KEY_FILE
        try:
            return path.read_text().strip() or None
        except OSError:
            return None
    return None


def _fail(message: str, code: int) -> int:
    print(f"lowdose-tomo enhancer: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, *, on_report: Callable[[ServiceReport], Any] | None = None) -> int:
    """Run ``lowdose-tomo enhancer``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options (see :func:`configure_parser`).
    on_report : callable, optional
        Receives the :class:`ServiceReport` at the end.

    Returns
    -------
    int
        0 when stopped cleanly, 1 when open runs could not be finished in time or a service is
        unreachable, 2 for bad options, 130 when a second signal interrupted the close.
    """
    logger.setLevel(logging.INFO)  # a service says what it does, without -v
    data_dir = Path(args.data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        return _fail(f"--data-dir {data_dir} is a file, not a directory", 2)
    tiled_uri = args.tiled_uri or DEFAULT_TILED_URI
    try:
        report = run_enhancer_service(
            args.zmq,
            tiled_uri=tiled_uri,
            api_key=_api_key(args),
            backup_directory=data_dir / "backup",
            work_directory=data_dir / "work",
            volume_directory=Path(args.volume_dir).expanduser() if args.volume_dir else data_dir / "volumes",
            method=args.method,
            n2i_steps=args.n2i_steps,
            epochs=args.epochs,
            stop_after=args.stop_after,
            ready_file=args.ready_file,
            close_timeout=args.close_timeout,
            preview_interval=None if args.preview_interval < 0 else args.preview_interval,
            registry=args.registry,
        )
    except ServiceError as exc:
        return _fail(str(exc), exc.code)
    except OSError as exc:  # e.g. the backup directory cannot be created
        return _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    except KeyboardInterrupt as exc:
        return _fail(f"interrupted ({exc or 'Ctrl-C'}); open processed runs may stay unclosed", 130)
    if on_report is not None:
        on_report(report)
    return 0 if report.closed_in_time else 1
