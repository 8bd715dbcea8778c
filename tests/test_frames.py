"""FrameResolver: every way a camera delivers images, and clear errors for what does not fit."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
from event_model import compose_run

from bluesky_lowdose.callbacks.frames import IMAGE_DATASET, FrameResolver, FrameResolverError


def _stack(path, n, shape=(3, 4)):
    frames = np.arange(n * shape[0] * shape[1], dtype=np.uint16).reshape(n, *shape)
    with h5py.File(path, "w") as f:
        f.create_dataset(IMAGE_DATASET, data=frames)
    return frames


def _feed(resolver, docs):
    frames = []
    for name, doc in docs:
        if name in ("descriptor", "stream_resource", "stream_datum", "resource", "datum", "datum_page"):
            getattr(resolver, name)(doc)
        elif name in ("event", "event_page"):
            frames.extend(resolver.events(name, doc))
    return frames


def test_areadetector_resource_datum_frames(tmp_path) -> None:
    """ophyd v1's HDF5 plugin: Resource (AD_HDF5, frame_per_point) + one Datum per point."""
    frames = _stack(tmp_path / "cam_000.h5", 4)
    run = compose_run()
    desc = run.compose_descriptor(
        name="primary",
        data_keys={
            "cam_image": {"source": "PV:cam", "dtype": "array", "shape": [1, 3, 4], "external": "FILESTORE:"}
        },
    )
    res = run.compose_resource(spec="AD_HDF5", root=str(tmp_path), resource_path="cam_000.h5",
                               resource_kwargs={"frame_per_point": 1})  # fmt: skip
    docs = [("descriptor", desc.descriptor_doc), ("resource", res.resource_doc)]
    for point in range(4):
        datum = res.compose_datum(datum_kwargs={"point_number": point})
        docs.append(("datum", datum))
        docs.append(
            ("event", desc.compose_event(data={"cam_image": datum["datum_id"]}, timestamps={"cam_image": 0}))
        )
    got = _feed(FrameResolver("cam_image"), docs)
    assert [f.seq_num for f in got] == [1, 2, 3, 4]
    for frame, expected in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.image, expected)  # [1, H, W] comes out as [H, W]


def _stream_docs(tmp_path, seq, rows, n_rows=4):
    frames = _stack(tmp_path / "s.h5", n_rows)
    run = compose_run()
    desc = run.compose_descriptor(
        name="primary",
        data_keys={"det": {"source": "sim", "dtype": "array", "shape": [1, 3, 4], "external": "STREAM:"}},
    )
    sres = run.compose_stream_resource(mimetype="application/x-hdf5", uri=(tmp_path / "s.h5").as_uri(),
                                       data_key="det", parameters={"dataset": IMAGE_DATASET})  # fmt: skip
    from event_model import StreamRange

    datum = sres.compose_stream_datum(indices=StreamRange(start=rows[0], stop=rows[1]),
                                      seq_nums=StreamRange(start=seq[0], stop=seq[1]))  # fmt: skip
    datum["descriptor"] = desc.descriptor_doc["uid"]
    docs = [("descriptor", desc.descriptor_doc), ("stream_resource", sres.stream_resource_doc),
            ("stream_datum", datum)]  # fmt: skip
    for _ in range(seq[1] - seq[0]):
        docs.append(("event", desc.compose_event(data={}, timestamps={})))
    return docs, frames


def test_one_stream_datum_for_many_events_maps_every_row(tmp_path) -> None:
    docs, frames = _stream_docs(tmp_path, seq=(1, 5), rows=(0, 4))
    got = _feed(FrameResolver(), docs)
    assert len(got) == 4
    for frame, expected in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.image, expected)


def test_two_rows_per_event_are_one_stack_not_a_truncation(tmp_path) -> None:
    docs, frames = _stream_docs(tmp_path, seq=(1, 3), rows=(0, 4))
    got = _feed(FrameResolver(), docs)
    assert [f.image.shape for f in got] == [(2, 3, 4), (2, 3, 4)]
    np.testing.assert_array_equal(np.concatenate([f.image for f in got]), frames)


def test_rows_that_do_not_divide_among_events_are_an_error(tmp_path) -> None:
    docs, _ = _stream_docs(tmp_path, seq=(1, 4), rows=(0, 4))
    with pytest.raises(FrameResolverError, match="maps 4 rows onto 3 events"):
        _feed(FrameResolver(), docs)


def test_rows_never_written_are_an_error_after_the_read_timeout(tmp_path) -> None:
    docs, _ = _stream_docs(tmp_path, seq=(1, 3), rows=(3, 5))
    with pytest.raises(FrameResolverError, match=r"not in .* within 0.3 s \(has 4\)"):
        _feed(FrameResolver(read_timeout=0.3), docs)


def test_a_detector_that_flushes_after_reporting_done_loses_no_frame(tmp_path) -> None:
    """The events arrive before their rows are in the file (an areaDetector HDF5 plugin that
    flushes late): the resolver reads again, reopening the file, until the rows are there.
    Before, the announcement was dropped at the first look and the frame was lost."""
    import subprocess
    import sys
    import textwrap

    docs, frames = _stream_docs(tmp_path, seq=(1, 5), rows=(0, 4))
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:  # the file exists, its rows do not yet
        f.create_dataset(IMAGE_DATASET, shape=(0, 3, 4), maxshape=(None, 3, 4), dtype=np.uint16)
    writer = textwrap.dedent(f"""
        import time, h5py, numpy as np
        time.sleep(0.8)
        with h5py.File({str(path)!r}, "a") as f:
            ds = f[{IMAGE_DATASET!r}]
            ds.resize((4, 3, 4))
            ds[:] = np.arange(48, dtype=np.uint16).reshape(4, 3, 4)
    """)
    env = {"HDF5_USE_FILE_LOCKING": "FALSE"}  # the reader may hold the file open meanwhile
    import os

    late = subprocess.Popen([sys.executable, "-c", writer], env={**os.environ, **env})
    try:
        got = _feed(FrameResolver(read_timeout=30), docs)
    finally:
        late.wait(30)
    assert late.returncode == 0
    assert len(got) == 4
    for frame, expected in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.image, expected)


def test_readers_in_the_writers_process_read_every_row_as_written(tmp_path) -> None:
    """The simulated detector writes its HDF5 file (SWMR) in the process where enhancers read it.
    The resolver used to call ``Dataset.refresh()`` before each read: in one process that races
    with the writer and now and then returned another row's frame (row 0 for row 1 or 2 of a new
    file: a flat or a projection read twice, the scan reconstructed from the wrong frames).
    Three readers in threads, lagging at random, read every row of many short files as written."""
    import queue
    import random
    import threading

    from event_model import StreamRange

    shape = (16, 16)

    def image(stage: int, row: int) -> np.ndarray:
        return np.random.default_rng([stage, row]).integers(0, 60000, shape).astype(np.uint16)

    run = compose_run()
    desc = run.compose_descriptor(
        name="primary",
        data_keys={"det": {"source": "sim", "dtype": "array", "shape": [*shape], "external": "STREAM:"}},
    )
    inboxes: list[queue.Queue] = [queue.Queue() for _ in range(3)]
    wrong: list[tuple[int, int, int]] = []

    def read(k: int) -> None:
        resolver, pause = FrameResolver(read_timeout=10), random.Random(k)
        resolver.descriptor(desc.descriptor_doc)
        while (item := inboxes[k].get()) is not None:
            stage, row, docs = item
            if pause.random() < 0.3:
                time.sleep(pause.random() * 0.01)
            for name, doc in docs[:-1]:
                getattr(resolver, name)(doc)
            (frame,) = resolver.events("event", docs[-1][1])
            if not np.array_equal(frame.image, image(stage, row)):
                wrong.append((k, stage, row))
        resolver.close()

    readers = [threading.Thread(target=read, args=(k,)) for k in range(3)]
    for t in readers:
        t.start()
    pace = random.Random(99)

    def write(stage: int) -> None:
        path = tmp_path / f"stage{stage}.h5"
        sres = run.compose_stream_resource(mimetype="application/x-hdf5", uri=path.as_uri(), data_key="det",
                                           parameters={"dataset": IMAGE_DATASET})  # fmt: skip
        with h5py.File(path, "w", libver="latest") as f:  # as devices.txm's detector writes
            ds = f.create_dataset(IMAGE_DATASET, shape=(0, *shape), maxshape=(None, *shape),
                                  chunks=(1, *shape), dtype=np.uint16)  # fmt: skip
            f.swmr_mode = True
            for row in range(4):
                ds.resize(row + 1, axis=0)
                ds[row] = image(stage, row)
                ds.flush()
                event = desc.compose_event(data={}, timestamps={})
                seq = event["seq_num"]
                datum = sres.compose_stream_datum(indices=StreamRange(start=row, stop=row + 1),
                                                  seq_nums=StreamRange(start=seq, stop=seq + 1))  # fmt: skip
                datum["descriptor"] = desc.descriptor_doc["uid"]
                docs = [("stream_datum", datum), ("event", event)]
                if row == 0:
                    docs.insert(0, ("stream_resource", sres.stream_resource_doc))
                for inbox in inboxes:
                    inbox.put((stage, row, docs))
                time.sleep(pace.random() * 0.002)

    try:
        for stage in range(100):
            write(stage)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for t in readers:
            t.join(60)
    assert wrong == [], f"(reader, file, row) read as another row: {wrong}"
