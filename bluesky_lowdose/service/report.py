"""What the enhancer service reports: the outcome of each run, how the service ended, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RunOutcome", "ServiceError", "ServiceReport"]


class ServiceError(Exception):
    """A problem the user can fix (bad address, Tiled unreachable); one line, no traceback.

    Parameters
    ----------
    message : str
        What is wrong.
    code : int
        Exit status of ``lowdose-tomo enhancer`` (2: bad usage, 1: a service is unreachable).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunOutcome:
    """What the service produced for one raw run.

    Attributes
    ----------
    raw_uid, processed_uid : str
        The raw run and its processed run ("" when none was written).
    method : str
        The pipeline method run.
    status : str
        ``"complete"`` or ``"partial"``.
    reasons : list of str
        Why the processed run is partial.
    """

    raw_uid: str
    processed_uid: str
    method: str
    status: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class ServiceReport:
    """How a run of the service ended.

    Attributes
    ----------
    outcomes : list of RunOutcome
        Every raw run processed, in the order they finished.
    stop_reason : str
        Why the service stopped (a signal, ``stop_after`` reached, the bus failed).
    closed_in_time : bool
        False when runs were still being processed or written at the end of the close timeout.
    """

    outcomes: list[RunOutcome] = field(default_factory=list)
    stop_reason: str = ""
    closed_in_time: bool = True
