"""``lowdose-tomo ioc``: serve the simulated TXM over Channel Access."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["LOOPBACK_ENV", "configure_parser", "loopback_environment", "run", "run_ioc"]

#: EPICS variables that keep an IOC and its clients on the loopback interface (searches,
#: server sockets and beacons).
LOOPBACK_ENV: dict[str, str] = {
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
}


def loopback_environment(port: int | None = None) -> dict[str, str]:
    """The EPICS environment of an IOC and its clients on loopback.

    Parameters
    ----------
    port : int, optional
        A Channel Access port of the IOC's own (UDP searches and, if free, TCP). Several
        IOCs on one host all receive broadcast searches, but a unicast search to
        ``127.0.0.1:5064`` reaches only one of them; with its own port each IOC is found.

    Returns
    -------
    dict
        Variables to put in the environment of the IOC and of its clients.
    """
    env = dict(LOOPBACK_ENV)
    if port is not None:
        env["EPICS_CA_SERVER_PORT"] = str(int(port))
        env["EPICS_CA_ADDR_LIST"] = f"127.0.0.1:{int(port)}"
    return env


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``ioc`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub)parser to fill.
    """
    parser.description = (
        "Serve the simulated TXM over Channel Access: {P}rot and {P}samx (motor records), {P}shutter, "
        "{P}cam1: (areaDetector camera) and {P}HDF1: (HDF5 file plugin). The server listens on "
        "$EPICS_CAS_INTF_ADDR_LIST (default 127.0.0.1) and port $EPICS_CA_SERVER_PORT (default 5064)."
    )
    parser.add_argument("--prefix", required=True, help="PV prefix, e.g. TXM:")
    parser.add_argument("--data-dir", required=True, help="existing directory for the HDF5 files")
    parser.add_argument("--size", type=int, default=128, help="phantom/detector size in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom and noise (default 0)")
    parser.add_argument(
        "--flux", type=float, default=300.0, help="photons per pixel per second, open beam (default 300)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help="fraction of the exposure time the camera really waits (default 0: instant)",
    )
    parser.add_argument(
        "--readout-time", type=float, default=0.005, help="seconds per frame read-out (default 0.005)"
    )
    parser.add_argument(
        "--interfaces",
        nargs="+",
        default=None,
        help="addresses to listen on (default $EPICS_CAS_INTF_ADDR_LIST, else 127.0.0.1)",
    )
    parser.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")


class _BeaconFailures(logging.Filter):
    """Report a failed beacon once, in one line, instead of a traceback every beacon period.

    Beacons to ``127.0.0.1:5065`` fail when no CA repeater runs on the host (common on a
    test machine, and harmless: clients without a repeater do not listen to beacons).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Failed to send beacon"):
            return True
        if self.seen:
            return False
        self.seen = True
        first = record.getMessage().split(". Try setting")[0]
        record.msg = "%s (no CA repeater listening?); further beacon failures are not logged"
        record.args = (first,)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def run_ioc(ioc: Any, *, interfaces: Sequence[str] | None = None) -> None:
    """Serve ``ioc`` until interrupted (Ctrl-C or SIGTERM), then close its open file.

    Parameters
    ----------
    ioc : TXMIOC
        The IOC.
    interfaces : sequence of str, optional
        Addresses to listen on (default: caproto's reading of ``EPICS_CAS_INTF_ADDR_LIST``).
    """
    from caproto import get_server_address_list
    from caproto.server import run as serve

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    beacon_filter = _BeaconFailures()
    ctx_log = logging.getLogger("caproto.ctx")
    ctx_log.addFilter(beacon_filter)
    try:
        serve(ioc.pvdb, interfaces=list(interfaces or get_server_address_list()))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        ctx_log.removeFilter(beacon_filter)
        ioc.close_files()


def run(args: argparse.Namespace) -> int:
    """Start the IOC configured by :func:`configure_parser`'s options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit status: 0 after a clean stop, 2 for invalid options.
    """
    from .server import TXMIOC

    if not args.prefix.strip():
        print("lowdose-tomo ioc: error: --prefix must not be empty", file=sys.stderr)
        return 2
    try:
        ioc = TXMIOC(
            args.prefix,
            data_dir=Path(args.data_dir),
            size=args.size,
            seed=args.seed,
            flux=args.flux,
            time_scale=args.time_scale,
            readout_time=args.readout_time,
        )
    except ValueError as exc:
        print(f"lowdose-tomo ioc: error: {exc}", file=sys.stderr)
        return 2
    if args.list_pvs:
        print("\n".join(ioc.pv_names))
        return 0
    for key, value in LOOPBACK_ENV.items():
        if key.startswith("EPICS_CAS_"):  # the server side only; clients keep their own settings
            os.environ.setdefault(key, value)
    interfaces = args.interfaces
    listening = " ".join(interfaces or [os.environ["EPICS_CAS_INTF_ADDR_LIST"]])
    port = os.environ.get("EPICS_CA_SERVER_PORT", "5064")
    print(
        f"IOC {args.prefix!r}: {len(ioc.pv_names)} PVs, {ioc.physics.shape[0]} px frames into "
        f"{ioc.data_directory}, listening on {listening} port {port}. Ctrl-C to stop.",
        flush=True,
    )
    run_ioc(ioc, interfaces=interfaces)
    return 0
