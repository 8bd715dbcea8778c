"""A ready-to-use beamline namespace: RunEngine, Tiled, the TXM (simulated or over EPICS) and plans.

The startup files under ``profile/startup`` (shared by the IPython profile and the
bluesky-queueserver RE Manager) call these functions and put what they return into the
user namespace; all the logic lives here.

================  =================================================================
name              what it is
================  =================================================================
``RE``            ``bluesky.RunEngine``; ``RE.md`` persists in the data directory
``tiled_client``  root of the Tiled server (``raw`` and ``processed`` run catalogs)
``raw``           the ``raw`` run catalog (``raw[-1]``, ``raw[uid]``, ``raw[scan_id]``)
``tiled_server``  the embedded :class:`~bluesky_lowdose.storage.TiledServer`, or None
``tiled_writer``  the ``TiledWriter`` subscription (on its own thread)
``enhancer``      the streaming CNN enhancer subscription, or None (also when it runs as a
                  service: ``LOWDOSE_ENHANCER_ZMQ``)
``txm``           :class:`~bluesky_lowdose.devices.TXMDevices` (the simulator, or stock
                  ophyd EPICS devices when ``LOWDOSE_EPICS_PREFIX`` is set)
``txm_cam``       the camera; ``rotation``, ``shutter``, ``sample_x`` the other devices
plans             ``lowdose_tomo_scan`` (queue-annotated; its shutter values default to
                  ``txm.plan_kwargs()``), ``count``, ``mv``
================  =================================================================

Configuration comes from arguments or, for the startup files, from environment variables
(:meth:`BeamlineConfig.from_env`):

===========================  ==========================================================
variable                     meaning (default)
===========================  ==========================================================
``LOWDOSE_DATA_DIR``         data directory: RE metadata, backups, detector files, and the
                             embedded Tiled catalog (``./lowdose-data``)
``LOWDOSE_TILED_URI``        use this Tiled server instead of starting one; key from
                             ``TILED_API_KEY``
``LOWDOSE_DETECTOR_DIR``     where the camera writes HDF5 files; the Tiled server must be
                             able to read it (``<data dir>/detector``)
``LOWDOSE_VOLUME_DIR``       where the enhancer writes the processed volumes, registered in
                             Tiled in place; the Tiled server must be able to read it
                             (``<data dir>/volumes``; set it with ``LOWDOSE_TILED_URI``)
``LOWDOSE_SIZE``             detector/phantom size in pixels (128)
``LOWDOSE_SEED``             seed of phantom and noise (0)
``LOWDOSE_MOTION_DELAY``     seconds per stage move (0)
``LOWDOSE_TIME_SCALE``       fraction of the exposure time the camera really waits (0)
``LOWDOSE_ENHANCE``          subscribe the streaming CNN enhancer when available (1)
``LOWDOSE_EPOCHS``           training epochs of the projection CNN (15)
``LOWDOSE_METHOD``           pipeline method of the enhancer (``auto``: the best measured)
``LOWDOSE_N2I_STEPS``        Noise2Inverse training steps (the pipeline's default)
``LOWDOSE_REGISTRY``         model registry in Tiled: ``auto`` (default: first result from
                             the best model of the run's instrument, then fine-tuned),
                             ``record`` (from scratch), ``only`` (apply it, no training) or ``off``
``LOWDOSE_EPICS_PREFIX``     drive the microscope over EPICS Channel Access at this PV
                             prefix (e.g. ``lowdose-tomo ioc --prefix TXM:``) instead of
                             the in-process simulator; the camera writes to
                             ``LOWDOSE_DETECTOR_DIR`` if set, else to the IOC's data directory
``LOWDOSE_ENHANCER_ZMQ``     publish the documents to this ``bluesky-0MQ-proxy`` input
                             (``HOST:PORT``) for ``lowdose-tomo enhancer`` instead of
                             enhancing in this process (unset: in-process enhancer)
``LOWDOSE_DASK_SCHEDULER``   the in-process enhancer reconstructs as slab tasks on this Dask
                             scheduler (``tcp://HOST:PORT``; ``local``: an in-process cluster)
``LOWDOSE_DISK_RESERVE_MB``  MiB kept free on the disks scan data go to (64): a frame or
                             an enhancer file that would leave less stops the scan cleanly
                             with "disk full" (read at every write; any process of the package)
===========================  ==========================================================
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "ENV",
    "BeamlineConfig",
    "beamline_from_env",
    "setup_beamline",
    "setup_devices",
    "setup_plans",
    "setup_run_engine",
]

logger = logging.getLogger(__name__)

#: Environment variables read by :meth:`BeamlineConfig.from_env`, by field.
ENV: dict[str, str] = {
    "data_dir": "LOWDOSE_DATA_DIR",
    "tiled_uri": "LOWDOSE_TILED_URI",
    "detector_dir": "LOWDOSE_DETECTOR_DIR",
    "volume_dir": "LOWDOSE_VOLUME_DIR",
    "size": "LOWDOSE_SIZE",
    "seed": "LOWDOSE_SEED",
    "motion_delay": "LOWDOSE_MOTION_DELAY",
    "time_scale": "LOWDOSE_TIME_SCALE",
    "enhance": "LOWDOSE_ENHANCE",
    "epochs": "LOWDOSE_EPOCHS",
    "method": "LOWDOSE_METHOD",
    "n2i_steps": "LOWDOSE_N2I_STEPS",
    "registry": "LOWDOSE_REGISTRY",
    "epics_prefix": "LOWDOSE_EPICS_PREFIX",
    "enhancer_zmq": "LOWDOSE_ENHANCER_ZMQ",
    "dask_scheduler": "LOWDOSE_DASK_SCHEDULER",
}

_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class BeamlineConfig:
    """What :func:`setup_beamline` builds.

    Attributes
    ----------
    data_dir : Path
        Data directory (RE metadata, backups, detector files, embedded Tiled catalog).
    tiled_uri : str or None
        Tiled server to use; None starts an embedded one serving ``data_dir``.
    api_key : str or None
        Tiled API key (default: ``$TILED_API_KEY``, or the key kept in ``data_dir``).
    detector_dir : Path or None
        Directory of the camera's HDF5 files (default ``<data_dir>/detector``); it must be
        readable by the Tiled server.
    volume_dir : Path or None
        Directory of the enhancer's processed volumes (default ``<data_dir>/volumes``); they are
        registered in Tiled in place, so it must be readable by the Tiled server.
    size : int
        Detector/phantom size in pixels.
    seed : int
        Seed of phantom and noise.
    motion_delay : float
        Seconds per stage move (0: instant).
    time_scale : float
        Fraction of the exposure time the camera really waits (0: instant).
    enhance : bool
        Subscribe the streaming CNN enhancer (:class:`~bluesky_lowdose.callbacks.ProjectionEnhancer`).
    persistent_md : bool
        Keep ``RE.md`` (hence ``scan_id``) in ``<data_dir>/runengine-metadata``.
    epochs : int
        Training epochs of the projection CNN of the streaming enhancer.
    method : str
        Pipeline method of the streaming enhancer (``"auto"``: the best measured).
    n2i_steps : int or None
        Noise2Inverse training steps (None: the pipeline's default).
    registry : str
        The enhancer's model registry mode: ``"auto"``, ``"record"``, ``"only"`` or ``"off"``.
    epics_prefix : str or None
        PV prefix of the microscope over EPICS (None: the in-process simulator; ``size``,
        ``seed``, ``motion_delay`` and ``time_scale`` then belong to the IOC).
    enhancer_zmq : str or None
        Input address (``HOST:PORT``) of a ``bluesky-0MQ-proxy``: the RunEngine publishes its
        documents there (``bluesky.callbacks.zmq.Publisher``) for ``lowdose-tomo enhancer``
        instead of subscribing the in-process enhancer; the raw-run writer stays in process.
    dask_scheduler : str or None
        Dask scheduler of the enhancer's reconstruction slabs (``"local"``: in-process cluster;
        None: accumulated frame by frame in this process).
    """

    data_dir: Path = Path("lowdose-data")
    tiled_uri: str | None = None
    api_key: str | None = None
    detector_dir: Path | None = None
    volume_dir: Path | None = None
    size: int = 128
    seed: int = 0
    motion_delay: float = 0.0
    time_scale: float = 0.0
    enhance: bool = True
    persistent_md: bool = True
    epochs: int = 15
    method: str = "auto"
    n2i_steps: int | None = None
    registry: str = "auto"
    epics_prefix: str | None = None
    enhancer_zmq: str | None = None
    dask_scheduler: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BeamlineConfig:
        """The configuration given by ``LOWDOSE_*`` environment variables (see :data:`ENV`).

        Parameters
        ----------
        environ : mapping, optional
            Environment (default ``os.environ``).
        **overrides
            Fields that take precedence over the environment.

        Returns
        -------
        BeamlineConfig
            Defaults, overridden by the environment, overridden by ``overrides``.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def get(field: str) -> str | None:
            value = env.get(ENV[field])
            return None if value is None or value.strip() == "" else value.strip()

        for field, convert in (
            ("data_dir", Path),
            ("tiled_uri", str),
            ("detector_dir", Path),
            ("volume_dir", Path),
            ("size", int),
            ("seed", int),
            ("motion_delay", float),
            ("time_scale", float),
            ("epochs", int),
            ("method", str),
            ("n2i_steps", int),
            ("registry", str),
            ("epics_prefix", str),
            ("enhancer_zmq", str),
            ("dask_scheduler", str),
        ):
            raw = get(field)
            if raw is not None:
                try:
                    values[field] = convert(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV[field]}={raw!r}: {exc}") from None
        enhance = env.get(ENV["enhance"])
        if enhance is not None:
            values["enhance"] = enhance.strip().lower() not in _FALSE
        if env.get("TILED_API_KEY"):
            values["api_key"] = env["TILED_API_KEY"]
        values.update(overrides)
        return cls(**values)

    @property
    def detector_directory(self) -> Path:
        """Where the camera writes (``detector_dir`` or ``<data_dir>/detector``)."""
        if self.detector_dir is not None:
            return Path(self.detector_dir).expanduser().resolve()
        from .storage import DataDirectory

        return DataDirectory(Path(self.data_dir).expanduser().resolve()).detector

    @property
    def volume_directory(self) -> Path:
        """Where the enhancer writes its volumes (``volume_dir`` or ``<data_dir>/volumes``)."""
        if self.volume_dir is not None:
            return Path(self.volume_dir).expanduser().resolve()
        from .storage import DataDirectory

        return DataDirectory(Path(self.data_dir).expanduser().resolve()).volumes


class _Closer:
    """Wait for the enhancer, flush the Tiled writer, stop the embedded server: once, at exit.

    Registered with :mod:`atexit` after h5py is imported (handlers run last-in first-out, so it
    runs while h5py, which keras' ``save_model`` needs, still works), with multiprocessing's
    finalizers (the RE Manager's worker, where atexit does not run), and, in IPython, in front
    of ``exit``/Ctrl-D, where Ctrl-C returns to the prompt instead of leaving.

    Parameters
    ----------
    writer : ThreadedCallback or None
        The raw-run writer.
    server : TiledServer or None
        The embedded server.
    enhancer : ProjectionEnhancer or None
        Waited for (up to ``timeout`` seconds) so that processed runs are complete.
    timeout : float
        Longest wait for the enhancer at exit.
    """

    #: Seconds between two progress lines while waiting.
    REPORT_EVERY_S = 15.0

    def __init__(self, writer: Any, server: Any, enhancer: Any = None, *, timeout: float = 3600.0) -> None:
        self.writer = writer
        self.server = server
        self.enhancer = enhancer
        self.timeout = timeout
        self.done = False

    def wait_for_enhancer(self) -> bool:
        """Wait, printing what the enhancer does, until its processed runs are saved.

        Returns
        -------
        bool
            True when nothing is left to do. ``KeyboardInterrupt`` (Ctrl-C) propagates to the
            caller, which decides what stopping the wait means.
        """
        if self.enhancer is None:
            return True
        deadline = time.monotonic() + self.timeout
        while True:
            busy = self.enhancer.busy()
            if not busy:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            lines = "; ".join(b["text"] for b in busy)
            print(f"lowdose: waiting for the enhancer to save its processed runs: {lines}"
                  " (Ctrl-C stops waiting)", file=sys.stderr, flush=True)  # fmt: skip
            if self.enhancer.close(timeout=min(self.REPORT_EVERY_S, left)):
                return True

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            finished = self.wait_for_enhancer()
        except KeyboardInterrupt:
            finished = False
        if not finished:
            busy = self.enhancer.busy()
            logger.error(
                "stopped waiting for the enhancer at exit: %s stay incomplete; the raw runs are safe in "
                "Tiled (reprocess one with `lowdose-tomo export --run UID` and `lowdose-tomo enhance`)",
                "; ".join(b["text"] for b in busy) or "no run",
            )
        if self.writer is not None:
            if not self.writer.flush(timeout=60):
                logger.error("Tiled writes still pending at exit; runs are kept in the backup directory")
            self.writer.close(timeout=5)
        if self.server is not None:
            self.server.close()


def _at_exit(func: Any) -> None:
    import atexit

    # h5py unregisters its type converters at exit; atexit runs handlers last-in first-out, so
    # ours, registered after h5py's import, runs first (keras saves models through h5py).
    import h5py  # noqa: F401

    atexit.register(func)
    # multiprocessing's finalizers run at interpreter exit *and* when a multiprocessing child
    # ends (the RE Manager's worker), where atexit does not run; ``func`` must be idempotent.
    from multiprocessing.util import Finalize

    Finalize(None, func, exitpriority=10)


def _hook_ipython(closer: _Closer) -> None:
    """In IPython: wait for the enhancer at ``exit``/Ctrl-D, and say when it works after a cell."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or closer.enhancer is None:
        return
    ask_exit = shell.ask_exit

    def ask_exit_after_saving() -> None:
        try:
            finished = closer.wait_for_enhancer()
        except KeyboardInterrupt:
            print("\nlowdose: not exiting; the enhancer keeps working (`enhancer.busy()` says what it "
                  "does; exit again to wait)", file=sys.stderr, flush=True)  # fmt: skip
            return
        if not finished:
            print("lowdose: the enhancer did not finish in time; exiting anyway", file=sys.stderr)
        ask_exit()

    shell.ask_exit = ask_exit_after_saving
    announced: set[str] = set()

    def say_what_the_enhancer_does(result: Any = None) -> None:
        for b in closer.enhancer.busy():
            if b["raw_uid"] in announced or b.get("frames_enhanced", 0) < b.get("frames_expected", 1):
                continue  # said once per run, once its frames are all in
            announced.add(b["raw_uid"])
            print(f"lowdose: the enhancer is still working on {b['text']}; its processed run appears in "
                  "tiled_client['processed'] when done. `enhancer.wait()` waits; exiting waits too.",
                  file=sys.stderr, flush=True)  # fmt: skip

    shell.events.register("post_run_cell", say_what_the_enhancer_does)


def setup_run_engine(config: BeamlineConfig) -> dict[str, Any]:
    """RunEngine, Tiled connection (or embedded server) and the raw-run writer.

    Parameters
    ----------
    config : BeamlineConfig
        The configuration.

    Returns
    -------
    dict
        ``RE``, ``tiled_client``, ``raw``, ``tiled_server`` (None when ``tiled_uri`` is
        given), ``tiled_writer`` and ``enhancer`` (None when not subscribed).
    """
    from bluesky import RunEngine
    from bluesky.utils import PersistentDict

    from .callbacks import ThreadedCallback
    from .storage import RAW, DataDirectory, TiledServer, TiledUnreachable, connect, make_raw_writer

    layout = DataDirectory.create(config.data_dir)
    server = None
    if config.tiled_uri:
        try:
            client = connect(config.tiled_uri, api_key=config.api_key)
        except TiledUnreachable as exc:  # one line, not the client's retries and an httpx traceback
            raise TiledUnreachable(
                f"{exc}: start that server, or unset {ENV['tiled_uri']} for an embedded one"
            ) from None
    else:
        server = TiledServer(layout.root, api_key=config.api_key).start()
        client = server.client()

    RE = RunEngine({}, call_returns_result=False)
    if config.persistent_md:
        RE.md = PersistentDict(str(layout.root / "runengine-metadata"))
    RE.md.setdefault("beamline_id", "lowdose-sim-txm")

    writer = ThreadedCallback(make_raw_writer(client, backup_directory=layout.backup), name="tiled-raw")
    RE.subscribe(writer)
    if config.enhancer_zmq:  # the enhancer runs as a service (lowdose-tomo enhancer)
        from bluesky.callbacks.zmq import Publisher

        from .wire import pack

        RE.subscribe(Publisher(config.enhancer_zmq, serializer=pack))  # msgpack, as the service reads
        enhancer = None
    else:
        enhancer = _subscribe_enhancer(RE, client, layout, config) if config.enhance else None
    closer = _Closer(writer, server, enhancer)
    _at_exit(closer)
    _hook_ipython(closer)
    return {
        "RE": RE,
        "tiled_client": client,
        "raw": client[RAW],
        "tiled_server": server,
        "tiled_writer": writer,
        "enhancer": enhancer,
        **service_functions(writer, enhancer),
    }


def service_functions(writer: Any, enhancer: Any) -> dict[str, Any]:
    """Functions the queue may run in the worker (``function_execute``): what is still being saved.

    ``lowdose-tomo queue stop`` calls ``lowdose_wait_until_saved`` before it closes the worker
    environment, so closing never kills an enhancer that is still training or writing.

    Parameters
    ----------
    writer : ThreadedCallback
        The raw-run writer.
    enhancer : ProjectionEnhancer or None
        The streaming enhancer.

    Returns
    -------
    dict
        ``lowdose_enhancer_status`` and ``lowdose_wait_until_saved``.
    """

    def lowdose_enhancer_status() -> dict[str, Any]:
        """Progress of every run the enhancer has seen (stage, frames, status)."""
        if enhancer is None:
            return {}
        return {
            uid: {"status": res.status, **enhancer.progress_of(uid)}
            for uid, res in list(enhancer.results.items())
        }

    def lowdose_wait_until_saved(timeout: float = 600.0) -> dict[str, Any]:
        """Wait until every processed run is closed and every document is in Tiled (or backed up).

        Parameters
        ----------
        timeout : float
            Seconds to wait in total.

        Returns
        -------
        dict
            ``saved`` (everything finished in time), ``runs`` (status per raw run) and
            ``writer_pending`` (documents not yet written).
        """
        t0 = time.monotonic()
        finished = enhancer.wait(timeout=timeout) if enhancer is not None else True
        flushed = writer.flush(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        runs = (
            {uid: res.status for uid, res in list(enhancer.results.items())} if enhancer is not None else {}
        )
        return {"saved": bool(finished and flushed), "runs": runs, "writer_pending": writer.pending}

    return {
        "lowdose_enhancer_status": lowdose_enhancer_status,
        "lowdose_wait_until_saved": lowdose_wait_until_saved,
    }


#: Finished runs the profile's enhancer keeps in ``enhancer.results`` (memory stays flat over a
#: beamtime: every result is in Tiled, every model in the registry).
KEEP_RESULTS = 1


def _subscribe_enhancer(RE: Any, client: Any, layout: Any, config: BeamlineConfig) -> Any:
    from .callbacks import ProjectionEnhancer
    from .storage import close_abandoned_runs

    close_abandoned_runs(client)  # runs a killed session (or service) of this host left open

    n2i = {} if config.n2i_steps is None else {"steps": config.n2i_steps}
    mapper = None
    if config.dask_scheduler:
        from .engine import DaskEngine

        engine = DaskEngine(config.dask_scheduler)
        _at_exit(engine.close)
        mapper = engine.map
    enhancer = ProjectionEnhancer(client, backup_directory=layout.backup, method=config.method,
                                  train_kwargs={"epochs": config.epochs}, n2i_options=n2i,
                                  mapper=mapper, keep_frames=False, work_directory=layout.work,
                                  volume_directory=config.volume_directory, registry=config.registry,
                                  keep_results=KEEP_RESULTS,
                                  isolate_training=True)  # fmt: skip  # a session trains every scan for days
    RE.subscribe(enhancer)
    return enhancer


def setup_devices(config: BeamlineConfig) -> dict[str, Any]:
    """The TXM by device name, plus ``txm`` (the :class:`TXMDevices`).

    Parameters
    ----------
    config : BeamlineConfig
        The configuration: with ``epics_prefix`` the stock ophyd EPICS devices of
        :func:`~bluesky_lowdose.devices.make_epics_devices` (the camera writes to
        ``detector_dir`` if given, else to the IOC's data directory); otherwise the simulator
        (size, seed, delays, detector directory).

    Returns
    -------
    dict
        ``txm``, ``txm_cam``, ``rotation``, ``shutter``, ``sample_x``.
    """
    from .devices import make_devices, make_epics_devices

    if config.epics_prefix:
        write_path = None if config.detector_dir is None else str(config.detector_directory)
        txm = make_epics_devices(config.epics_prefix, write_path=write_path)
        return {"txm": txm, **txm.as_dict()}

    detector_dir = config.detector_directory
    detector_dir.mkdir(parents=True, exist_ok=True)
    txm = make_devices(
        detector_dir,
        size=config.size,
        seed=config.seed,
        motion_delay=config.motion_delay,
        time_scale=config.time_scale,
    )
    return {"txm": txm, **txm.as_dict()}


def setup_plans(txm: Any = None) -> dict[str, Any]:
    """The plans offered to users: ``lowdose_tomo_scan``, ``count``, ``mv`` (all queue-annotated).

    Parameters
    ----------
    txm : TXMDevices, optional
        The devices; where their :meth:`~bluesky_lowdose.devices.TXMDevices.plan_kwargs`
        (e.g. an EPICS shutter's ``"Open"``/``"Close"``) differ from the plan's defaults,
        ``lowdose_tomo_scan`` gets them as its defaults (visible to the queueserver).

    Returns
    -------
    dict
        Plans by name.
    """
    from .plans.queue_annotations import annotate_count_and_mv, lowdose_tomo_scan

    if txm is not None:
        lowdose_tomo_scan = _with_defaults(lowdose_tomo_scan, txm.plan_kwargs())
    return {"lowdose_tomo_scan": lowdose_tomo_scan, **annotate_count_and_mv()}


def _with_defaults(plan: Any, defaults: dict[str, Any]) -> Any:
    """``plan`` with other keyword defaults (same name, docstring and queue annotation)."""
    import functools
    import inspect

    signature = inspect.signature(plan)
    changed = {k: v for k, v in defaults.items() if k in signature.parameters}
    if all(signature.parameters[k].default == v for k, v in changed.items()):
        return plan

    @functools.wraps(plan)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return (yield from plan(*args, **{**changed, **kwargs}))

    params = [p.replace(default=changed.get(p.name, p.default)) for p in signature.parameters.values()]
    bound.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return bound


def setup_beamline(
    data_dir: str | Path | None = None,
    tiled_uri: str | None = None,
    *,
    api_key: str | None = None,
    detector_dir: str | Path | None = None,
    size: int = 128,
    seed: int = 0,
    motion_delay: float = 0.0,
    time_scale: float = 0.0,
    enhance: bool = True,
    persistent_md: bool = True,
) -> dict[str, Any]:
    """Everything a session needs, as a namespace dict.

    Parameters
    ----------
    data_dir : str or Path, optional
        Data directory (default ``./lowdose-data``).
    tiled_uri : str, optional
        Tiled server to use (default: start an embedded one serving ``data_dir``).
    api_key : str, optional
        Tiled API key (default ``$TILED_API_KEY`` or the key kept in ``data_dir``).
    detector_dir : str or Path, optional
        Directory of the camera's files (default ``<data_dir>/detector``).
    size : int
        Detector/phantom size in pixels.
    seed : int
        Seed of phantom and noise.
    motion_delay : float
        Seconds per stage move.
    time_scale : float
        Fraction of the exposure time the camera really waits.
    enhance : bool
        Subscribe the streaming CNN enhancer when available.
    persistent_md : bool
        Keep ``RE.md`` in the data directory.

    Returns
    -------
    dict
        See the module docstring for the names.

    Examples
    --------
    >>> globals().update(setup_beamline(size=64))  # doctest: +SKIP
    >>> RE(lowdose_tomo_scan(txm_cam, rotation, shutter, sample_x, num_angles=91))  # doctest: +SKIP
    """
    config = BeamlineConfig(
        tiled_uri=tiled_uri,
        api_key=api_key,
        detector_dir=None if detector_dir is None else Path(detector_dir),
        size=size,
        seed=seed,
        motion_delay=motion_delay,
        time_scale=time_scale,
        enhance=enhance,
        persistent_md=persistent_md,
    )
    if data_dir is not None:
        config = replace(config, data_dir=Path(data_dir))
    return _setup(config)


def beamline_from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """:func:`setup_beamline` configured by ``LOWDOSE_*`` environment variables.

    Parameters
    ----------
    environ : mapping, optional
        Environment (default ``os.environ``).
    **overrides
        :class:`BeamlineConfig` fields that take precedence over the environment.

    Returns
    -------
    dict
        The namespace.
    """
    return _setup(BeamlineConfig.from_env(environ, **overrides))


def _setup(config: BeamlineConfig) -> dict[str, Any]:
    namespace: dict[str, Any] = {"beamline_config": config}
    namespace.update(setup_run_engine(config))
    namespace.update(setup_devices(config))
    namespace.update(setup_plans(namespace["txm"]))
    return namespace
