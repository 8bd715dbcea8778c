"""Connecting to Tiled, the ``raw`` and ``processed`` run catalogs, and the raw-run writer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .backup import loads, resolve_arrays

__all__ = [
    "PROCESSED",
    "RAW",
    "RUN_CATALOG_SPEC",
    "STORAGE_REASON",
    "TiledUnreachable",
    "close_abandoned_runs",
    "connect",
    "ensure_run_catalogs",
    "make_raw_writer",
    "make_run_writer",
    "read_first_element",
    "replay_backups",
    "stream_array",
]

logger = logging.getLogger(__name__)

#: A processed run's reason that starts with this says only that Tiled did not take its documents
#: in time (they are in the backup): replaying the whole backup makes the run complete, and
#: :func:`replay_backups` says so in its stop document.
STORAGE_REASON = "storage: "
#: Run catalog of raw acquisitions.
RAW = "raw"
#: Run catalog of enhanced/reconstructed results.
PROCESSED = "processed"
#: Spec that makes a Tiled container a catalog of Bluesky runs.
RUN_CATALOG_SPEC = ("CatalogOfBlueskyRuns", "3.0")


class TiledUnreachable(ConnectionError):
    """Nothing answered at the Tiled address (said at once, not after the client's retries)."""


def probe(uri: str, *, timeout: float = 5.0) -> None:
    """Ask ``uri``'s ``/healthz`` once; raise :class:`TiledUnreachable` when nothing answers.

    Tiled's client retries a refused connection for ~25 s before it fails; every command of the
    package asks once first, so "Tiled is down" is said in a second.

    Parameters
    ----------
    uri : str
        Server address (any path on it; ``/healthz`` is at its root).
    timeout : float
        Seconds for the connection and the answer.

    Raises
    ------
    TiledUnreachable
        Connection refused, timed out, or no such host.
    """
    import httpx

    url = httpx.URL(uri)
    try:
        httpx.get(str(url.copy_with(path="/healthz", query=None)), timeout=timeout)
    except httpx.TransportError as exc:
        raise TiledUnreachable(f"cannot reach Tiled at {uri}: {exc or type(exc).__name__}") from None


def ensure_run_catalogs(client: Any, names: tuple[str, ...] = (RAW, PROCESSED)) -> None:
    """Create the run-catalog containers that do not exist yet.

    Parameters
    ----------
    client : tiled.client.container.Container
        Root of a writable Tiled server.
    names : tuple of str
        Container keys.
    """
    from tiled.client.utils import ClientError
    from tiled.structures.core import Spec

    for name in names:
        if name in client:
            continue
        try:
            client.create_container(name, specs=[Spec(*RUN_CATALOG_SPEC)])
        except ClientError as exc:  # another process created it between the check and here
            if exc.response.status_code != 409:
                raise
            logger.debug("run catalog %r was created by another client at the same time", name)


def connect(uri: str, *, api_key: str | None = None, create: bool = True) -> Any:
    """A tiled client of ``uri`` whose ``raw`` and ``processed`` run catalogs exist.

    Parameters
    ----------
    uri : str
        Server address, e.g. ``http://127.0.0.1:8000``.
    api_key : str, optional
        API key (default: ``$TILED_API_KEY``).
    create : bool
        Create missing run catalogs.

    Returns
    -------
    tiled.client.container.Container
        The root container.

    Raises
    ------
    TiledUnreachable
        Nothing answers at ``uri`` (within a few seconds, see :func:`probe`).
    """
    from tiled.client import from_uri

    probe(uri)
    client = from_uri(uri, api_key=api_key)
    if create:
        ensure_run_catalogs(client)
    return client


def make_raw_writer(
    client: Any, *, backup_directory: str | Path | None, batch_size: int = 20, catalog: str = RAW
) -> Any:
    """A ``TiledWriter`` into the ``raw`` run catalog, with a JSON-lines backup.

    If a write fails (Tiled down, a bad document), the whole run is written as JSON lines
    into ``backup_directory`` (:class:`~bluesky_lowdose.storage.backup.BackedUpWriter`;
    replay it later with :func:`replay_backups`); image data stays in the detector's HDF5
    files either way.

    Parameters
    ----------
    client : tiled.client.container.Container
        Root of the Tiled server.
    backup_directory : str or Path or None
        Where failed runs are written.
    batch_size : int
        Events/StreamDatums per write (small: runs become visible while they are taken).
    catalog : str
        Key of the run catalog.

    Returns
    -------
    callable
        A ``TiledWriter``, wrapped in a ``BackedUpWriter`` when ``backup_directory`` is given.
    """
    ensure_run_catalogs(client, (catalog,))
    return make_run_writer(client[catalog], backup_directory=backup_directory, batch_size=batch_size)


def make_run_writer(catalog_node: Any, *, backup_directory: str | Path | None, batch_size: int = 20) -> Any:
    """A ``TiledWriter`` into an existing run-catalog node (makes no request to the server).

    Parameters
    ----------
    catalog_node : tiled.client.container.Container
        A ``CatalogOfBlueskyRuns`` container, e.g. ``client["processed"]``.
    backup_directory : str or Path or None
        Where runs go as JSON lines if a write fails.
    batch_size : int
        Events/StreamDatums per write.

    Returns
    -------
    callable
        A ``TiledWriter``, wrapped in a ``BackedUpWriter`` when ``backup_directory`` is given.
    """
    from bluesky_tiled_plugins import TiledWriter

    from .backup import BackedUpWriter

    writer = TiledWriter(catalog_node, batch_size=batch_size, max_array_size=0)
    return writer if backup_directory is None else BackedUpWriter(writer, backup_directory)


def replay_backups(client: Any, backup_directory: str | Path, *, catalog: str | None = None) -> list[str]:
    """Write runs kept as JSON lines (after a Tiled outage) into Tiled.

    Each file goes to the ``processed`` catalog when its start document has
    ``original_run_uid`` (a result of the enhancer), otherwise to ``raw`` — unless
    ``catalog`` says where. A replayed file is renamed ``*.jsonl.replayed``. A run that is
    already complete in Tiled is skipped (and its file renamed). One that is there but
    incomplete (Tiled failed or froze mid-run) is replaced by the backup, which holds every
    document of the run from its start: the truncated node is deleted and the run written again.
    Replaying is idempotent (an interrupted replay is simply redone). A backup without a stop
    document (the writing process died) is replayed as it is, with a warning. A file that cannot
    be parsed is reported and skipped; the others are still replayed.

    Parameters
    ----------
    client : tiled.client.container.Container
        Root of the Tiled server.
    backup_directory : str or Path
        Directory of ``*.jsonl`` backups.
    catalog : str, optional
        Key of the run catalog to write every file into.

    Returns
    -------
    list of str
        Uids of the runs written.
    """
    from tiled.client.utils import ClientError

    written = []
    for path in sorted(Path(backup_directory).glob("*.jsonl")):
        try:
            # arrays stay on disk until their document is written: a run's volumes never sit in memory
            text = path.read_text().splitlines()
            lines = [loads(line, path.parent, lazy=True) for line in text if line.strip()]
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            logger.error("skipping %s: %s", path, exc)
            continue
        if not lines or lines[0]["name"] != "start":
            logger.warning("skipping %s: does not start with a start document", path)
            continue
        start = lines[0]["doc"]
        target = catalog or (PROCESSED if "original_run_uid" in start else RAW)
        ensure_run_catalogs(client, (target,))
        node = client[target]
        uid = start["uid"]
        if uid in node:
            try:
                complete = bool(node[uid].metadata.get("stop"))
            except ClientError:
                complete = False
            if not complete:
                logger.warning("%s: run %s is in Tiled but incomplete; replaced by the backup", path, uid)
                node.delete_contents(uid, recursive=True, external_only=False)
        if uid not in node:
            if lines[-1]["name"] != "stop":
                logger.warning("%s: the backup of run %s has no stop document; replayed as it is", path, uid)
            writer = make_run_writer(node, backup_directory=None, batch_size=1000)
            for item in lines:
                doc = item["doc"]
                if item["name"] == "stop" and item is lines[-1]:
                    doc = _complete_after_replay(doc)
                writer(item["name"], resolve_arrays(doc))
            written.append(uid)
        path.rename(path.with_name(path.name + ".replayed"))
    return written


#: The reason a run left open by a dead process is closed with (after ``partial: ``).
ABANDONED_REASON = "abandoned: "


def close_abandoned_runs(client: Any, catalog: str = PROCESSED) -> list[str]:
    """Close the runs that a process on this host opened and can no longer close.

    A processed run's start document names the process that writes it (``processor``: host,
    pid, start time; :func:`bluesky_lowdose._process.process_identity`). A run of this host
    without a stop document whose process is gone (killed, crashed, the machine rebooted) would
    otherwise stay open forever and look like work in progress: it gets a stop document
    ``exit_status="fail"``, ``reason="partial: abandoned: ..."``, naming the process. Runs of a
    process that still runs, and runs of other hosts (whose processes cannot be checked from
    here), are left alone. Never raises: what cannot be looked up or closed is logged.

    Parameters
    ----------
    client : tiled.client.container.Container
        Root of the Tiled server.
    catalog : str
        Run catalog to look in.

    Returns
    -------
    list of str
        Uids of the runs closed.
    """
    import socket
    import time

    from event_model import compose_stop
    from tiled.queries import Key

    from .._process import pid_alive

    host = socket.gethostname()
    closed: list[str] = []
    try:
        if catalog not in client:
            return closed
        found = list(client[catalog].search(Key("start.processor.host") == host).items())
    except Exception as exc:  # never fatal: the caller still starts; the runs stay open, and that is said
        logger.error("could not look for runs left open by a process that died: %r", exc)
        return closed
    for uid, node in found:
        md = node.metadata
        if md.get("stop"):
            continue
        proc = md["start"].get("processor") or {}
        pid, started = proc.get("pid"), proc.get("pid_start")
        if pid_alive(pid, started):
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(md["start"].get("time", 0)))
        reason = (f"partial: {ABANDONED_REASON}the process that wrote this run (pid {pid} on {host}, "
                  f"run started {when}) ended without closing it (killed or crashed); what reached "
                  "Tiled before is kept")  # fmt: skip
        stop = compose_stop(start=dict(md["start"]), event_counters={}, poison_pill=[], exit_status="fail",
                            reason=reason)  # fmt: skip
        try:
            node.update_metadata(metadata={"stop": stop}, drop_revision=True)
        except Exception as exc:
            logger.error("could not close abandoned run %s: %r", uid, exc)
            continue
        logger.warning("closed run %s: %s", uid, reason)
        closed.append(uid)
    return closed


def _complete_after_replay(stop: dict) -> dict:
    """A stop that failed only because Tiled did not take the documents says complete after replay.

    The backup holds every document of the run, so once it is replayed whole nothing is missing;
    the original reason is kept after ``was:``. Any other reason keeps the run ``fail``.
    """
    reason = stop.get("reason") or ""
    partial, _, summary = reason.partition(" | ")
    if stop.get("exit_status") != "fail" or not partial.startswith("partial: "):
        return stop
    reasons = partial[len("partial: ") :].split("; ")
    if not reasons or not all(r.startswith(STORAGE_REASON) for r in reasons):
        return stop
    new = f"complete after replay (was: {partial})" + (f" | {summary}" if summary else "")
    return {**stop, "exit_status": "success", "reason": new}


def stream_array(run: Any, stream: str, key: str) -> Any:
    """The array client of one data key of one stream of a run.

    Works with both layouts a Tiled client may present: the current one
    (``run[stream][key]``) and the one databroker's client classes present once
    ``databroker`` has been imported (``run[stream]["data"][key]``).

    Parameters
    ----------
    run : tiled.client.container.Container
        A Bluesky run node.
    stream : str
        Stream name, e.g. ``"primary"``.
    key : str
        Data key, e.g. ``"txm_cam_image"``.

    Returns
    -------
    tiled.client.array.ArrayClient
    """
    node = run[stream]
    if key in node:
        return node[key]
    if "data" in node and key in node["data"]:
        return node["data"][key]
    raise KeyError(f"stream {stream!r} of run {run.metadata['start']['uid']} has no data key {key!r}")


def read_first_element(array: Any, *, timeout: float = 10.0) -> Any:
    """The first element of a Tiled array, asked for in one request.

    Tiled's client retries a server error for ~25 s before it raises; a file the server cannot
    read (outside its readable storage, gone) answers with one at once. This asks once, so a
    check that the server serves an array is answered in a request's time.

    Parameters
    ----------
    array : tiled.client.array.ArrayClient
        The array (e.g. from :func:`stream_array`).
    timeout : float
        Seconds for the answer.

    Returns
    -------
    numpy.ndarray
        ``(1, ..., 1)``: the element.

    Raises
    ------
    tiled.client.utils.ClientError
        The server answered with an error (its message says why).
    httpx.TransportError
        No answer, asked three times (a connection reset by a loaded server is not an answer:
        it once made a served volume look unserved).
    """
    import time
    from urllib.parse import parse_qs, urlparse

    import httpx
    import numpy as np
    from tiled.client.utils import handle_error

    ndim = len(array.shape)
    url = array.item["links"]["full"]
    params = {**parse_qs(urlparse(url).query), "slice": ",".join(["0:1"] * ndim),
              "expected_shape": ",".join(["1"] * ndim) or "scalar"}  # fmt: skip
    for attempt in range(3):
        try:
            response = array.context.http_client.get(
                url, headers={"Accept": "application/octet-stream"}, params=params, timeout=timeout
            )
            break
        except httpx.TransportError:
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    content = handle_error(response).read()
    return np.frombuffer(content, dtype=array.dtype).reshape((1,) * ndim)
