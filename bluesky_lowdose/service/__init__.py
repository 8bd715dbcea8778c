"""``lowdose-tomo enhancer``: the streaming enhancer as its own process, fed by bluesky's 0MQ bus.

The RunEngine publishes its documents with ``bluesky.callbacks.zmq.Publisher`` (the profile does
so when ``LOWDOSE_ENHANCER_ZMQ`` is set) to a ``bluesky-0MQ-proxy``; this service subscribes a
:class:`~bluesky_lowdose.callbacks.ProjectionEnhancer` to the proxy's output with a
``bluesky.callbacks.zmq.RemoteDispatcher``. Training, enhancement, reconstruction and any GPU
memory then never share a process with the RunEngine; the processed runs go to Tiled exactly as
with the in-process enhancer.

::

    bluesky-0MQ-proxy --in-address 127.0.0.1:5577 --out-address 127.0.0.1:5578
    lowdose-tomo enhancer --zmq 127.0.0.1:5578 --tiled-uri http://127.0.0.1:8000
    LOWDOSE_ENHANCER_ZMQ=127.0.0.1:5577 ipython --profile=lowdose    # the RunEngine side

The service reads the detector's frames from the files the documents point to, so it must see
the detector directory at the same path as the RunEngine (same machine or a shared file system).

On SIGTERM or SIGINT it stops listening, ends every run whose stop document has not arrived
(its processed run is closed as partial, with the reason) and waits for the open runs to be
written; a second signal exits at once. Errors while processing a run make that run partial
and never end the service.
"""

from __future__ import annotations

from .bus import parse_zmq_address
from .cli import configure_parser, run
from .core import DEFAULT_TILED_URI, EnhancerService, run_enhancer_service
from .report import RunOutcome, ServiceError, ServiceReport

__all__ = [
    "DEFAULT_TILED_URI",
    "EnhancerService",
    "RunOutcome",
    "ServiceError",
    "ServiceReport",
    "configure_parser",
    "parse_zmq_address",
    "run",
    "run_enhancer_service",
]
