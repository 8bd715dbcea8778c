"""The 0MQ side of the service: addresses, and bluesky's ``RemoteDispatcher`` with a socket monitor.

:func:`_monitored_dispatcher` holds the one copy of a private piece of bluesky
(``RemoteDispatcher.start``, bluesky 1.15); ``tests/test_enhancer_service.py`` checks it against the
pinned bluesky's source, so an upgrade that changes it fails a test instead of the service.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from .report import ServiceError

__all__ = ["parse_zmq_address"]

logger = logging.getLogger("bluesky_lowdose.service")

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>\d+)$")


def parse_zmq_address(text: str) -> str:
    """The 0MQ address of ``HOST:PORT``, ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Parameters
    ----------
    text : str
        The address as a user writes it.

    Returns
    -------
    str
        ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Raises
    ------
    ValueError
        The text is no such address, or the port is not 1 ... 65535.

    Examples
    --------
    >>> parse_zmq_address("127.0.0.1:5578")
    'tcp://127.0.0.1:5578'
    """
    text = text.strip()
    if text.startswith("ipc://") and len(text) > len("ipc://"):
        return text
    rest = text[len("tcp://") :] if text.startswith("tcp://") else text
    match = _HOST_PORT.match(rest)
    if match is None:
        raise ValueError(f"{text!r} is not a 0MQ address: give HOST:PORT, tcp://HOST:PORT or ipc://PATH")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: a TCP port is 1 ... 65535, got {port}")
    return f"tcp://{rest}"


def _check_zmq_address(address: str) -> None:
    """Raise :class:`ServiceError` when 0MQ cannot connect to ``address`` (e.g. unknown host)."""
    import socket

    import zmq

    if address.startswith("tcp://"):
        host = address[len("tcp://") :].rpartition(":")[0].strip("[]")
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ServiceError(
                f"cannot resolve the host of {address}: {exc.strerror or exc}", code=2
            ) from None

    context = zmq.Context()
    try:
        sock = context.socket(zmq.SUB)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            raise ServiceError(f"cannot subscribe to {address}: {exc}", code=2) from None
        finally:
            sock.close(linger=0)
    finally:
        context.term()


def _monitored_dispatcher(address: str, watch: Callable[[Any], Awaitable[None]]) -> Any:
    """A ``RemoteDispatcher`` whose socket is monitored from before it connects.

    ``RemoteDispatcher.start()`` creates and connects its socket in one step, so a monitor attached
    afterwards can miss the handshake; this subclass's ``start()`` is bluesky's (1.15), with the
    monitor attached between the two, and polling resumed after a message whose name is no
    document kind (upstream's poll task ends there, and the service with it). Documents arrive
    as msgpack (:mod:`bluesky_lowdose.wire`). ``watch(monitor_socket)`` runs on the dispatcher's loop until
    :meth:`cancel`.
    """
    import zmq
    import zmq.asyncio
    from bluesky.callbacks.zmq import RemoteDispatcher

    class MonitoredRemoteDispatcher(RemoteDispatcher):
        _watcher: asyncio.Task | None = None

        def start(self) -> None:
            if self.closed:
                raise RuntimeError("this dispatcher has already been started and stopped")
            monitor = None
            try:
                asyncio.set_event_loop(self.loop)
                self._context = zmq.asyncio.Context()
                self._socket = self._context.socket(zmq.SUB)
                events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                monitor = self._socket.get_monitor_socket(events)
                self._watcher = self.loop.create_task(watch(monitor))
                self._socket.connect(self.address)
                self._socket.setsockopt_string(zmq.SUBSCRIBE, "")
                while True:
                    self._task = self.loop.create_task(self._poll())
                    try:
                        self.loop.run_until_complete(self._task)
                        break
                    except KeyError as exc:  # _poll's DocumentNames[name]: not a document kind
                        logger.error("dropped a 0MQ message naming no document kind: %s", exc)
            finally:
                if self._watcher is not None and not self._watcher.done():
                    self._watcher.cancel()
                    self.loop.run_until_complete(asyncio.gather(self._watcher, return_exceptions=True))
                if monitor is not None:
                    self._socket.disable_monitor()
                    monitor.close(linger=0)
                self.stop()

        def cancel(self) -> None:
            """Stop listening (call on the loop: ``loop.call_soon_threadsafe(dispatcher.cancel)``)."""
            if self._task is not None:
                self._task.cancel()

    from ..wire import unpack

    # msgpack, never pickle: a pickle sent to the proxy would otherwise run in this process
    return MonitoredRemoteDispatcher(address, deserializer=unpack)
