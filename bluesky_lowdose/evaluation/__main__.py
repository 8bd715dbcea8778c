"""``python -m bluesky_lowdose.evaluation``: the ``evaluate`` subcommand on its own."""

from __future__ import annotations

import argparse
import sys

from .cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the evaluation.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bluesky_lowdose.evaluation")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
