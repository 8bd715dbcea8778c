"""Trainings in a child process, so that a process that lives for many scans keeps flat memory.

Every Keras training leaves memory behind in TensorFlow's own caches (about 30 MiB per
Noise2Inverse training here, not reachable from Python; ``keras.backend.clear_session``,
allocator settings and oneDNN's cache size do not return it). The IPython profile, the queue
worker and the enhancer service train once or twice per scan for days: :func:`train_in_child`
runs the training in a fresh Python process that ends with it, and the parent gets the trained
:class:`~bluesky_lowdose.model.Enhancer` back as its ``.keras`` bytes (loading a model leaves
nothing behind).

The child is a new interpreter (running :func:`_main` of this module), never a fork of a
process running TensorFlow's threads and never a ``multiprocessing`` spawn, which would run a
user's unguarded script again. The training function and its arguments go to it pickled on its
input; it answers on its output with pickled messages: each epoch's logs (passed to
``on_epoch`` in this process), then the model or the exception raised, which is raised here
again. Its progress bars and logs go to this process's error output. The same seed gives the
same weights as a training in this process. A child whose parent dies (killed, out of memory)
ends within a second, and a parent that stops waiting (an exception in ``on_epoch``,
Ctrl-C) stops the child.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["TrainingProcessError", "train_in_child"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class TrainingProcessError(RuntimeError):
    """The training process ended without a result (killed, out of memory, or it crashed)."""


def train_in_child(
    function: Callable[..., Any],
    /,
    *args: Any,
    on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
    tf_threads: int | None = None,
    **kwargs: Any,
) -> Any:
    """``function(*args, on_epoch=..., **kwargs)`` in a new Python process; its model returned here.

    Parameters
    ----------
    function : callable
        A module-level training function of this package that returns an
        :class:`~bluesky_lowdose.model.Enhancer` and takes ``on_epoch`` (e.g.
        :func:`~bluesky_lowdose.model.train`,
        :func:`~bluesky_lowdose.model.n2i.train_noise2inverse`).
    *args, **kwargs
        Its arguments; they are pickled (arrays, :class:`~bluesky_lowdose.recon.StoredArray`,
        an ``initial`` Enhancer all are).
    on_epoch : callable, optional
        Called in this process with ``(epoch, logs)`` as the child reports each epoch. If it
        raises, the child is stopped and the exception propagates.
    tf_threads : int, optional
        TensorFlow's intra- and inter-op threads in the child (``tf.config.threading``, set before
        the training starts); default TensorFlow's own (one per core). ``auto`` trains
        Noise2Inverse on one core of two while BM3D runs on the other.

    Returns
    -------
    Enhancer
        The trained model, restored from the child's ``.keras`` bytes (same weights, same hash).

    Raises
    ------
    Exception
        What the training raised in the child (same type and message, its traceback there as a
        note; e.g. ``ValueError`` for bad input, :class:`~bluesky_lowdose.model.TrainingError`
        when the loss diverged); a ``RuntimeError`` naming the type when that exception cannot be
        pickled. What ``on_epoch`` raised.
    TrainingProcessError
        The child ended without an answer (e.g. killed; the message holds its exit status), sent
        what cannot be read here, or ended on ``SystemExit``/``KeyboardInterrupt``.
    pickle.PicklingError, TypeError, AttributeError
        ``function`` or an argument cannot be pickled (nothing was started).
    """
    from .._process import ChildProcess

    threads = None if tf_threads is None else int(tf_threads)
    payload = pickle.dumps(
        (function, args, kwargs, on_epoch is not None, threads), protocol=pickle.HIGHEST_PROTOCOL
    )
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, once per training
    name = f"training ({getattr(function, '__name__', function)})"
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # the child takes the GPU memory it needs, not all
    # the child imports this package from where this process did (a checkout, a test run's path):
    # its folder goes first on the child's path unless the path has it already (an installed package)
    code = (
        f"import sys; root = {_PACKAGE_ROOT!r}; sys.path.insert(0, root) if root not in sys.path else None; "
        f"from {__name__} import _main; sys.exit(_main({os.getpid()}))"
    )
    child = ChildProcess([sys.executable, "-c", code], env=env, name=name, stdin=True, stderr="inherit")
    try:
        writer = threading.Thread(target=_send, args=(child.stdin, payload), daemon=True, name="training-in")
        writer.start()  # a large payload must not block reading the child's first answers
        del payload  # the writer holds it until written: no second copy of the data while it trains
        out = child.stdout
        assert out is not None
        while True:
            try:
                kind, *body = pickle.load(out)
            except EOFError as exc:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(5)  # its own exit status (a signal, a crash), not our SIGTERM's
                status = child.stop(timeout=5)
                raise TrainingProcessError(
                    f"the {name} process ended without a result (exit status {status}); see its output above"
                ) from exc
            except Exception as exc:  # a message that does not unpickle here (e.g. an exception class)
                child.stop(timeout=5)
                raise TrainingProcessError(f"the {name} process sent what cannot be read: {exc!r}") from exc
            if kind == "epoch" and on_epoch is not None:
                on_epoch(*body)
            elif kind == "error":
                error = body[0]
                if not isinstance(error, Exception):  # SystemExit, KeyboardInterrupt: not the caller's
                    raise TrainingProcessError(f"the {name} process ended with {error!r}")
                raise error
            elif kind == "model":
                from .enhancer import from_bytes

                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(30)  # it ends by itself; stopped below if it does not
                return from_bytes(body[0])
    finally:
        try:
            child.stop(timeout=5)
        except BaseException:  # interrupted while stopping it: it must not outlive this call
            child.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                if child.stdout is not None:
                    child.stdout.close()


def _send(pipe: BinaryIO | None, payload: bytes) -> None:
    """Write the payload and close the pipe (a child that died first is reported by the reader)."""
    if pipe is None:
        return
    with contextlib.suppress(OSError):  # a broken pipe: the child died first
        with pipe:
            pipe.write(payload)


def _end_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this process when its parent is gone (killed: nobody would read the model)."""
    import time

    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _main(parent: int) -> int:
    """The child: read the call, run it, answer with its epochs and its model or exception.

    ``parent`` is the pid of the process that started it (read from its command line, not
    ``os.getppid()``, which is already another process if the parent died during the start).
    """
    import traceback

    answers = os.fdopen(os.dup(1), "wb")  # the messages' own channel ...
    os.dup2(2, 1)  # ... and anything printed goes to the error output, not into it
    sys.stdout = sys.stderr

    def send(*message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # whole, or nothing written
        answers.write(data)
        answers.flush()

    threading.Thread(target=_end_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    function, args, kwargs, report, threads = pickle.load(sys.stdin.buffer)
    if threads is not None:  # before anything runs on TensorFlow's thread pools
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if report:

        def report_epoch(epoch: int, logs: dict[str, Any]) -> None:
            send("epoch", int(epoch), {k: float(v) for k, v in logs.items()})

        kwargs["on_epoch"] = report_epoch
    try:
        model = function(*args, **kwargs)
    except BaseException as exc:  # raised again in the parent, as it was, with where it came from
        exc.add_note("in the training process:\n" + "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        try:
            pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))  # it must come back whole
        except Exception:  # an exception that does not pickle or rebuild: its type, message and trace
            exc = RuntimeError(f"{type(exc).__name__}: {exc}\n" + "\n".join(getattr(exc, "__notes__", [])))
        send("error", exc)
        return 1
    send("model", model.to_bytes())
    answers.close()
    return 0
