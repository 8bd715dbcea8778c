"""A progress bar of a low-dose scan, driven by its documents."""

from __future__ import annotations

from typing import Any

from event_model import DocumentRouter

__all__ = ["ScanProgress"]


class ScanProgress(DocumentRouter):
    """tqdm bar over all events of a run (darks, flats, references, rotation).

    The total comes from the start document's ``lowdose`` block when present, else from
    ``num_points``.

    Parameters
    ----------
    disable : bool
        Turn the bar off (e.g. for ``--json`` output).
    """

    def __init__(self, *, disable: bool = False) -> None:
        super().__init__()
        self.disable = disable
        self._bar: Any = None
        self._streams: dict[str, str] = {}

    def start(self, doc: dict) -> None:
        from tqdm.auto import tqdm

        ld = doc.get("lowdose", {})
        if ld:
            per_exposure = (
                ld.get("num_darks", 0) + ld.get("num_flats", 0) + len(ld.get("reference_angles", ()))
            )
            total = 2 * per_exposure + ld.get("num_angles", 0)
        else:
            total = doc.get("num_points")
        self._bar = tqdm(
            total=total,
            desc=f"scan {doc.get('scan_id', '')}".strip(),
            unit="frame",
            disable=self.disable,
            leave=True,
        )

    def descriptor(self, doc: dict) -> None:
        self._streams[doc["uid"]] = doc.get("name", "")

    def event(self, doc: dict) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._streams.get(doc["descriptor"], ""), refresh=False)
            self._bar.update(1)

    def event_page(self, doc: dict) -> None:
        if self._bar is not None:
            self._bar.update(len(doc["seq_num"]))

    def stop(self, doc: dict) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(doc.get("exit_status", ""))
            self._bar.close()
            self._bar = None
