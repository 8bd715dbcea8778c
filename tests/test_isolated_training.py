"""Trainings in a child process (``model.isolated``): the same model, the epochs reported here,
errors raised here as they were, and a child that never outlives its training."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from bluesky_lowdose._process import pid_alive
from bluesky_lowdose.model.isolated import TrainingProcessError, train_in_child

TINY = {"epochs": 2, "patience": 2, "max_patches": 48, "patch_size": 16, "batch_size": 16, "progress": False}


@pytest.fixture
def importable_here(monkeypatch):
    """The child imports this module's helpers by name: this folder on its path."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))


def _reports_epochs_then_hangs(n: int, pid_file: str, *, on_epoch=None) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    for epoch in range(n):
        on_epoch(epoch, {"loss": 1.0 / (epoch + 1)})
    time.sleep(600)


def _running(pid: int) -> bool:
    """``pid`` exists and is no zombie (an orphan's exit is reaped by whoever adopted it, or not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _raises(message: str, *, on_epoch=None) -> None:
    raise ValueError(message)


def _says_its_threads(*, on_epoch=None) -> None:
    import tensorflow as tf

    raise ValueError(f"intra {tf.config.threading.get_intra_op_parallelism_threads()} "
                     f"inter {tf.config.threading.get_inter_op_parallelism_threads()}")  # fmt: skip


def test_a_training_in_a_child_runs_on_the_tensorflow_threads_it_is_given(importable_here) -> None:
    """``auto`` trains Noise2Inverse on one core of two while BM3D runs on the other."""
    from test_isolated_training import _says_its_threads

    with pytest.raises(ValueError, match=r"^intra 1 inter 1"):
        train_in_child(_says_its_threads, tf_threads=1)


def test_a_training_in_a_child_gives_the_model_trained_here_and_reports_its_epochs() -> None:
    from bluesky_lowdose.model import train

    rng = np.random.default_rng(0)
    long_ = rng.random((2, 32, 32)).astype(np.float32)
    short = (long_ + 0.2 * rng.standard_normal(long_.shape)).astype(np.float32)
    start = train(short, long_, seed=1, **TINY)
    here = train(short, long_, seed=2, initial=start, **TINY)  # fine-tuning, as a warm start does
    epochs: list[tuple[int, dict]] = []
    child = train_in_child(train, short, long_, seed=2, initial=start,
                           on_epoch=lambda e, logs: epochs.append((e, logs)), **TINY)  # fmt: skip
    # the starting model went to the child pickled as its .keras bytes, and the same seed gives
    # the same weights bit for bit
    assert child.model_hash == here.model_hash
    assert child.provenance["fine_tuned_from"] == start.model_hash
    assert [e for e, _ in epochs] == list(range(len(here.provenance["history"]["loss"])))
    assert [logs["loss"] for _, logs in epochs] == pytest.approx(here.provenance["history"]["loss"])
    frame = short[0]
    np.testing.assert_array_equal(child.enhance(frame), here.enhance(frame))


def test_errors_of_the_training_are_raised_here_as_they_were(importable_here) -> None:
    import sys

    with pytest.raises(ValueError, match="frames are all NaN") as raised:
        train_in_child(_raises, "frames are all NaN")
    notes = "\n".join(raised.value.__notes__)  # where it was raised in the child
    assert "in the training process" in notes and "_raises" in notes
    with pytest.raises(TrainingProcessError, match="exit status 3"):
        train_in_child(os._exit, 3)  # killed, out of memory, crashed: it ends without an answer
    # not an error of the training: raised here it would end the caller's thread
    with pytest.raises(TrainingProcessError, match="SystemExit"):
        train_in_child(sys.exit, 4)


def test_an_on_epoch_that_raises_stops_the_child(importable_here, tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    seen: list[int] = []

    def stop_at_second(epoch: int, logs: dict) -> None:
        seen.append(epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the parent handles an epoch

    with pytest.raises(KeyboardInterrupt):
        train_in_child(_reports_epochs_then_hangs, 5, str(pid_file), on_epoch=stop_at_second)
    assert seen == [0, 1]
    assert not pid_alive(int(pid_file.read_text()))  # stopped, not left training


def test_the_child_ends_when_its_parent_is_killed(importable_here, tmp_path) -> None:
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "child.pid"
    code = (
        "from bluesky_lowdose.model.isolated import train_in_child\n"
        "from test_isolated_training import _reports_epochs_then_hangs\n"
        f"train_in_child(_reports_epochs_then_hangs, 1, {str(pid_file)!r}, on_epoch=print)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None and time.monotonic() < deadline, "the training never started"
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert pid_alive(child)
        parent.send_signal(signal.SIGKILL)  # e.g. the OOM killer: nothing stops the child for it
        parent.wait()
        deadline = time.monotonic() + 30
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child), "the training outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


class _Unreadable(Exception):
    """Pickles, but cannot be rebuilt (its ``__init__`` needs two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} {b}")


def _raises_unreadable(*, on_epoch=None) -> None:
    raise _Unreadable("not", "rebuildable")


def test_an_exception_that_cannot_be_rebuilt_is_reported_with_its_type_and_trace(importable_here) -> None:
    with pytest.raises(RuntimeError, match="_Unreadable: not rebuildable") as raised:
        train_in_child(_raises_unreadable)
    assert "_raises_unreadable" in str(raised.value)  # the child's traceback is in the message


def _rebuild_only_in(pid: int) -> Exception:
    if os.getpid() != pid:
        raise TypeError("this exception is rebuilt only in the process that raised it")
    return ValueError("rebuilt")


class _OnlyThere(Exception):
    """Rebuilds in the child (which checks that it does) but not in the parent."""

    def __reduce__(self):
        return _rebuild_only_in, (os.getpid(),)


def _raises_only_there(*, on_epoch=None) -> None:
    raise _OnlyThere("lost")


def test_a_message_that_cannot_be_read_here_is_a_training_process_error(importable_here) -> None:
    with pytest.raises(TrainingProcessError, match="cannot be read"):
        train_in_child(_raises_only_there)
