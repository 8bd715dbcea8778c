"""Evaluation harness: the paper's synthetic protocol, scores, tables and figures (pure).

:func:`run_evaluation` runs phantom -> projections -> noise -> CNN / baselines -> reconstruction
-> PSNR/SSIM; :func:`write_report` writes Markdown, JSON and PNG figures.  The command-line
front end is :mod:`bluesky_lowdose.evaluation.cli` (``lowdose-tomo evaluate``).  Nothing heavy
is imported until a run starts.
"""

from .config import PAPER_SSIM, EvaluationConfig
from .protocol import run_evaluation
from .report import machine_info, summary, to_json, to_markdown, write_report

__all__ = [
    "PAPER_SSIM",
    "EvaluationConfig",
    "machine_info",
    "run_evaluation",
    "summary",
    "to_json",
    "to_markdown",
    "write_report",
]
