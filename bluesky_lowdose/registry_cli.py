"""``lowdose-tomo models list|show|export|import``: the model registry from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_parser", "run"]

#: What ``list`` prints per model (``--json`` prints these keys).
SUMMARY = ("uid", "kind", "method", "instrument_id", "instrument", "raw_uid", "processed_uid", "score",
           "model_hash", "created", "started_from")  # fmt: skip


def _fail(message: str) -> int:
    print(f"lowdose-tomo models: error: {message}", file=sys.stderr)
    return 2


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``lowdose-tomo models`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A (sub)parser.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.description = "The model registry in Tiled ('models' container; API key from $TILED_API_KEY)."
    parser.add_argument("action", choices=("list", "show", "export", "import"))
    parser.add_argument("args", nargs="*", help="show UID | export UID FILE.keras | import FILE.keras")
    parser.add_argument("--tiled-uri", required=True, help="Tiled server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--json", action="store_true", help="list: one JSON list on stdout")
    parser.add_argument(
        "--kind", choices=("projection", "slices"), help="list: only this kind; import: its kind"
    )
    parser.add_argument(
        "--method", default=None, help="list: only this method; import: the method that made it"
    )
    parser.add_argument("--instrument", default=None, metavar="JSON",
                        help="import: the instrument key as JSON (as 'show' prints one)")  # fmt: skip
    return parser


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in SUMMARY}


def _import_file(args: argparse.Namespace) -> tuple[bytes, dict[str, Any], str, Path] | str:
    """What ``import`` files: (archive, instrument key, model hash, path), or why not."""
    path = Path(args.args[0]).expanduser()
    if not path.is_file():
        return f"no file {path}"
    if args.kind is None or args.method is None or args.instrument is None:
        return ("import needs --kind, --method and --instrument JSON (a model is never filed under "
                "an instrument it was not given)")  # fmt: skip
    try:
        instrument = json.loads(args.instrument)
    except json.JSONDecodeError as exc:
        return f"--instrument is not JSON: {exc}"
    if not isinstance(instrument, dict):
        return "--instrument must be a JSON object"
    blob = path.read_bytes()
    try:  # loads in Keras safe mode: an archive that would run code is refused here
        from .model import from_bytes

        model_hash = from_bytes(blob).model_hash
    except Exception as exc:
        return f"{path} is not a model this package can load: {exc}"
    return blob, instrument, model_hash, path


def run(args: argparse.Namespace) -> int:
    """Run ``lowdose-tomo models``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`configure_parser`.

    Returns
    -------
    int
        0 on success, 2 on a user error or an unreachable Tiled (one line on stderr).
    """
    import httpx
    from tiled.client.utils import ClientError

    from .storage import connect
    from .storage.models import ModelRegistry

    nargs = {"list": 0, "show": 1, "export": 2, "import": 1}[args.action]
    if len(args.args) != nargs:
        usage = {
            "list": "list",
            "show": "show UID",
            "export": "export UID FILE.keras",
            "import": "import FILE.keras",
        }
        return _fail(f"usage: lowdose-tomo models {usage[args.action]} --tiled-uri URI")
    if args.action == "import":
        checked = _import_file(args)
        if isinstance(checked, str):
            return _fail(checked)
        blob, instrument, model_hash, path = checked
    if args.action == "export":
        out = Path(args.args[1]).expanduser()
        if not out.parent.is_dir():
            return _fail(f"no directory {out.parent}")
    try:
        registry = ModelRegistry(
            connect(args.tiled_uri, api_key=os.environ.get("TILED_API_KEY"), create=False)
        )
        if args.action == "list":
            found = [_summary(m) for m in registry.search(kind=args.kind, method=args.method)]
            if args.json:
                print(json.dumps(found))
            else:
                for m in found:
                    score = m.get("score") or {}
                    gain = ""
                    if "psnr_db" in score and "raw_psnr_db" in score:
                        gain = f"{score['psnr_db'] - score['raw_psnr_db']:+.2f} dB vs raw"
                    print(f"{m['uid']}  {m['kind']:<10} {m['method']:<7} instrument {m['instrument_id']}  "
                          f"{gain}  from raw run {m['raw_uid']}")  # fmt: skip
                if not found:
                    print("no models", file=sys.stderr)
        elif args.action == "show":
            print(json.dumps(registry.metadata(args.args[0]), indent=2, default=str))
        elif args.action == "export":
            data = registry.blob(args.args[0])
            out.write_bytes(data)
            print(f"{args.args[0]} -> {out} ({len(data)} bytes)")
        else:
            uid = registry.register(
                blob, kind=args.kind, method=args.method, instrument=instrument,
                model_hash=model_hash, extra={"imported_from": str(path)},
            )  # fmt: skip
            print(uid)
    except KeyError as exc:
        return _fail(str(exc.args[0]) if exc.args else repr(exc))
    except (ClientError, httpx.HTTPError, OSError) as exc:
        return _fail(f"Tiled at {args.tiled_uri}: {exc}")
    return 0
