"""Document callbacks (``event_model.DocumentRouter`` agents) for low-dose scans."""

from .enhancer import ProjectionEnhancer, RunResult
from .frames import Frame, FrameResolver, FrameResolverError
from .progress import ScanProgress
from .threaded import ThreadedCallback

__all__ = [
    "Frame",
    "FrameResolver",
    "FrameResolverError",
    "ProjectionEnhancer",
    "RunResult",
    "ScanProgress",
    "ThreadedCallback",
]
