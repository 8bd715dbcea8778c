"""``python -m bluesky_lowdose.ioc``: the ``ioc`` subcommand on its own."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve the IOC.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m bluesky_lowdose.ioc")
    configure_parser(parser)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
