"""``lowdose-tomo evaluate``: run the evaluation protocol from the command line."""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["configure_parser", "run"]


def _angle_set(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"training angles must be comma-separated degrees, got {text!r}"
        ) from exc
    if not vals:
        raise argparse.ArgumentTypeError("empty set of training angles")
    return vals


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub)parser to fill.
    """
    parser.description = (
        "Benchmark CNN enhancement against noisy data and median/TV/BM3D baselines on the simulated "
        "cube-of-spheres phantom (the protocol of Yang et al., Sci. Rep. 8:2575, 2018)."
    )
    parser.add_argument(
        "--mode",
        choices=("gaussian", "poisson"),
        default="gaussian",
        help="Gaussian noise on normalised projections (paper) or TXM photon noise",
    )
    parser.add_argument("--size", type=int, default=128, help="phantom edge / detector width (default 128)")
    parser.add_argument("--angles", type=int, default=181, help="projections over [0, 180] deg (default 181)")
    parser.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[5, 10, 15, 20, 25, 30],
        metavar="PERCENT",
        help="Gaussian sigma in %% of the max clean normalised projection (default 5..30)",
    )
    parser.add_argument(
        "--dose-ratio",
        type=float,
        nargs="+",
        default=[10, 15],
        metavar="R",
        help="Poisson mode: long / short exposure ratios (default 10 15)",
    )
    parser.add_argument(
        "--exposure", type=float, default=1.0, help="Poisson mode: long exposure, s (default 1)"
    )
    parser.add_argument(
        "--train-angles",
        type=_angle_set,
        nargs="+",
        default=[(0.0, 45.0, 90.0)],
        metavar="DEG,DEG",
        help="one CNN per comma-separated angle set (default 0,45,90)",
    )
    parser.add_argument("--model", default="unet", help="CNN architecture (default unet)")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs per CNN (default 25)")
    parser.add_argument(
        "--train-stride", type=int, default=8, help="step between training patches, pixels (default 8)"
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["median", "tv", "bm3d"],
        choices=("median", "tv", "bm3d"),
        help="classical baselines (default all)",
    )
    parser.add_argument(
        "--slices", type=int, default=None, help="central slices scored (default size/8; 0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom, noise and training")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="write Markdown, JSON and PNG figures here"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bars on stderr (default: when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """Run an evaluation configured by :func:`configure_parser`'s options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for invalid parameters.
    """
    from .protocol import EvaluationConfig, run_evaluation
    from .report import machine_info, to_json, to_markdown, write_report

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    cfg = EvaluationConfig(
        mode=args.mode,
        size=args.size,
        angles=args.angles,
        noise_levels=tuple(v / 100.0 for v in args.noise),
        dose_ratios=tuple(args.dose_ratio),
        exposure=args.exposure,
        train_angles=tuple(args.train_angles),
        model=args.model,
        epochs=args.epochs,
        train_stride=args.train_stride,
        baselines=tuple(args.baselines),
        slices=args.slices,
        seed=args.seed,
        progress=progress,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"lowdose-tomo evaluate: error: {exc}", file=sys.stderr)
        return 2
    result = run_evaluation(cfg)
    result["machine"] = machine_info()
    command = "lowdose-tomo evaluate " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "evaluate")
    result["command"] = command
    if args.out:
        paths = write_report(result, args.out, command=command)
        print(f"wrote {paths['markdown']}, {paths['json']} and figures", file=sys.stderr)
    if args.json:
        print(to_json(result))
    else:
        print(to_markdown(result, command=command))
    return 0
