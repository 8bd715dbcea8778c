"""Export a raw low-dose run from Tiled to a Data Exchange file.

The run is a Tiled node of a ``lowdose_tomo_scan`` run (``client["raw"][uid]``); arrays are read
with :func:`bluesky_lowdose.storage.stream_array`, so both client layouts (with and without
databroker imported) work.  Only the tiled *client* is touched, through the node passed in.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..streams import PRIMARY, dark_stream, flat_stream, reference_stream
from .io import DataExchange, DataExchangeError
from .write import write_dxfile

__all__ = ["EXPORT_EXPOSURES", "export_run", "find_image_key", "run_to_dataexchange"]

logger = logging.getLogger(__name__)

ExportExposure = Literal["short", "long", "both"]
#: Choices of ``exposure`` in :func:`export_run`.
EXPORT_EXPOSURES: tuple[str, ...] = ("both", "short", "long")


def _plain(value: Any) -> Any:
    """Tiled metadata (DictView/ListView) as plain JSON-able Python objects."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple, set)) or hasattr(value, "__iter__"):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _data_keys(stream_node: Any) -> dict[str, Any]:
    md = stream_node.metadata
    if "data_keys" in md:
        return dict(md["data_keys"])
    descriptors = md.get("descriptors") or []
    if descriptors:
        return dict(descriptors[0].get("data_keys", {}))
    return {}


def find_image_key(run: Any, stream: str = PRIMARY) -> str:
    """The data key of the detector images in ``stream``.

    The key with a 2-D shape in the stream's data keys, preferring the one of the detector
    named in ``start["lowdose"]["detector"]``; ``<detector>_image`` when the stream carries no
    data keys in its metadata.

    Parameters
    ----------
    run : tiled.client.container.Container
        A Bluesky run node.
    stream : str
        Stream name.

    Returns
    -------
    str
        The image key.

    Raises
    ------
    DataExchangeError
        No or several candidate keys.
    """
    lowdose = run.metadata["start"].get("lowdose", {})
    detector = lowdose.get("detector")
    keys = _data_keys(run[stream])
    images = [k for k, v in keys.items() if len(v.get("shape") or []) == 2]
    if detector is not None:
        mine = [k for k in images if keys[k].get("object_name") == detector]
        images = mine or images
    if len(images) == 1:
        return images[0]
    if not images and detector is not None:
        return f"{detector}_image"
    raise DataExchangeError(
        f"cannot tell the image key of stream {stream!r}: candidates {images or 'none'} "
        f"(detector {detector!r})"
    )


def _read(run: Any, stream: str, key: str) -> np.ndarray:
    from ..storage import stream_array

    return np.asarray(stream_array(run, stream, key).read())


def run_to_dataexchange(run: Any, *, exposure: ExportExposure = "both") -> DataExchange:
    """The content of a raw ``lowdose_tomo_scan`` run as a :class:`DataExchange`.

    Parameters
    ----------
    run : tiled.client.container.Container
        A Bluesky run node from Tiled.
    exposure : {"both", "short", "long"}
        ``"short"``: the short-exposure rotation (``primary``) with ``flat_short``/``dark_short``
        (plain Data Exchange); ``"long"``: the long-exposure reference frames
        (``reference_long``) with ``flat_long``/``dark_long`` (the ``--long`` file of
        ``lowdose-tomo enhance``); ``"both"``: ``"short"`` plus the reference pairs and long
        flats/darks in the ``bluesky_lowdose`` extension (everything ``enhance`` needs, one file).

    Returns
    -------
    DataExchange
        Validated content, angles in degrees.

    Raises
    ------
    DataExchangeError
        The run is not a low-dose run or lacks a stream that ``exposure`` needs.
    """
    if exposure not in EXPORT_EXPOSURES:
        raise ValueError(f"exposure must be one of {EXPORT_EXPOSURES}, got {exposure!r}")
    start = _plain(run.metadata["start"])
    stop = _plain(run.metadata.get("stop") or {})
    uid = start.get("uid")
    lowdose = start.get("lowdose")
    if not isinstance(lowdose, dict) or "rotation" not in lowdose:
        raise DataExchangeError(
            f"run {uid} has no start['lowdose'] metadata (rotation, exposures): not a lowdose_tomo_scan run"
        )
    if stop.get("exit_status", "success") != "success":
        logger.warning(
            "run %s ended with exit_status %r; exporting what it holds", uid, stop.get("exit_status")
        )
    angle_key = lowdose["rotation"]
    streams = set(run)

    def need(*names: str) -> None:
        missing = [n for n in names if n not in streams]
        if missing:
            raise DataExchangeError(
                f"run {uid} has no stream {', '.join(map(repr, missing))} "
                f"(needed for exposure={exposure!r}); "
                f"it has {sorted(streams)}"
            )

    def images(stream: str) -> np.ndarray:
        return _read(run, stream, find_image_key(run, stream))

    def angles(stream: str) -> np.ndarray:
        return _read(run, stream, angle_key).astype(np.float64)

    sample = start.get("sample")
    sample_name: str | None = None
    if isinstance(sample, str):
        sample_name = sample
    elif isinstance(sample, dict) and isinstance(sample.get("name"), str):
        sample_name = sample["name"]
    common: dict[str, Any] = {
        "run_uid": uid,
        "sample_name": sample_name,
        "metadata": {"start": start, "stop": stop, "export": {"exposure": exposure}},
    }
    if exposure == "long":
        need(reference_stream("long"), flat_stream("long"), dark_stream("long"))
        dx = DataExchange(
            data=images(reference_stream("long")),
            theta=angles(reference_stream("long")),
            data_white=images(flat_stream("long")),
            data_dark=images(dark_stream("long")),
            exposure_time=lowdose.get("long_exposure"),
            **common,
        )
        return dx.validate()
    need(PRIMARY, flat_stream("short"), dark_stream("short"))
    dx = DataExchange(
        data=images(PRIMARY),
        theta=angles(PRIMARY),
        data_white=images(flat_stream("short")),
        data_dark=images(dark_stream("short")),
        exposure_time=lowdose.get("short_exposure"),
        **common,
    )
    if exposure == "both":
        need(reference_stream("short"), reference_stream("long"), flat_stream("long"), dark_stream("long"))
        theta_short, theta_long = angles(reference_stream("short")), angles(reference_stream("long"))
        if theta_short.shape != theta_long.shape or not np.allclose(theta_short, theta_long, atol=1e-3):
            raise DataExchangeError(
                f"run {uid}: reference_short angles {theta_short.tolist()} differ from reference_long "
                f"angles {theta_long.tolist()}"
            )
        dx.reference_short = images(reference_stream("short"))
        dx.reference_long = images(reference_stream("long"))
        dx.reference_theta = theta_long
        dx.data_white_long = images(flat_stream("long"))
        dx.data_dark_long = images(dark_stream("long"))
        dx.exposure_time_long = lowdose.get("long_exposure")
    return dx.validate()


def export_run(
    run: Any,
    path: str | os.PathLike[str],
    *,
    exposure: ExportExposure = "both",
    overwrite: bool = False,
    compression: str | None = None,
) -> Path:
    """Write a low-dose run from Tiled to a Data Exchange HDF5 file.

    A raw run (catalog ``raw``) is written as measured; a processed run of the streaming
    enhancer (its start document has ``original_run_uid``) is written with
    :func:`~bluesky_lowdose.dxchange.write.write_enhanced`: the enhanced transmission, its angles
    and the run's provenance.

    Parameters
    ----------
    run : tiled.client.container.Container
        A Bluesky run node, e.g. ``client["raw"][uid]``.
    path : str or os.PathLike
        Output file.
    exposure : {"both", "short", "long"}
        What goes into the file of a raw run (see :func:`run_to_dataexchange`).
    overwrite : bool
        Replace an existing file.
    compression : str, optional
        The h5py compression filter of the frame stacks (e.g. ``"gzip"``).

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    DataExchangeError
        The run lacks what ``exposure`` needs.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True / --overwrite to replace it)")
    start = run.metadata["start"]
    if "original_run_uid" in start:
        return _export_processed(run, path, overwrite=overwrite, compression=compression)
    dx = run_to_dataexchange(run, exposure=exposure)
    return write_dxfile(path, dx, overwrite=overwrite, compression=compression)


def _export_processed(run: Any, path: Path, *, overwrite: bool, compression: str | None) -> Path:
    from .write import write_enhanced

    start = run.metadata["start"]
    stop = run.metadata.get("stop") or {}
    method = start.get("provenance", {}).get("method")
    if "enhanced" not in run:
        raise DataExchangeError(
            f"processed run {start['uid']} has no 'enhanced' stream: method {method!r} enhances no "
            "projections "
            f"(its result is the reconstruction, stream 'recon_enhanced'), or the run failed "
            f"(stop: {stop.get('exit_status')!r} {stop.get('reason', '')!r})"
        )
    enhanced = _read(run, "enhanced", "enhanced_image").astype(np.float32)
    theta = _read(run, "enhanced", "angle").astype(np.float64)
    ld = start.get("lowdose", {})
    provenance: dict[str, Any] = {
        **start.get("provenance", {}),
        "outcome": {"exit_status": stop.get("exit_status"), "reason": stop.get("reason")},
    }
    if "provenance" in run:  # the pipeline's full record, written at the end of the run
        blob = _read(run, "provenance", "provenance_json").astype(np.uint8).ravel()
        provenance["pipeline"] = json.loads(blob.tobytes().decode())
    volume = _read(run, "recon_enhanced", "slice").astype(np.float32) if "recon_enhanced" in run else None
    return write_enhanced(
        path,
        enhanced,
        theta,
        json.loads(json.dumps(provenance, default=_default)),
        reconstruction=volume,
        exposure_time=ld.get("short_exposure"),
        sample_name=start.get("sample") if isinstance(start.get("sample"), str) else None,
        run_uid=start["original_run_uid"],
        metadata={"processed_run_uid": start["uid"]},
        overwrite=overwrite,
        compression=compression,
    )
