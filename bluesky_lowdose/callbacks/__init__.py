"""Document callbacks (``event_model.DocumentRouter`` agents) for low-dose scans."""

from .progress import ScanProgress
from .threaded import ThreadedCallback

__all__ = ["ScanProgress", "ThreadedCallback"]
