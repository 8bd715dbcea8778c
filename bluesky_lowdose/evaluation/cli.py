"""``lowdose-tomo evaluate``: run the evaluation protocol from the command line."""

from __future__ import annotations

import argparse
import os
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

    Defaults of ``--epochs`` and ``--n2i-steps`` are the pipeline's
    (:data:`bluesky_lowdose.pipeline.PROJECTION_TRAINING`, :data:`bluesky_lowdose.pipeline.N2I_OPTIONS`).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub)parser to fill.
    """
    from bluesky_lowdose.pipeline import AUTO_WITH_PAIRS, METHODS, N2I_OPTIONS, PROJECTION_TRAINING

    from .config import DEFAULT_METHODS, DOSE_LADDER

    parser.description = (
        "Benchmark the enhancement methods of bluesky_lowdose.pipeline (the paper's CNN, Noise2Inverse, "
        "the hybrid, BM3D on projections and on slices) on the simulated cube-of-spheres phantom (the "
        "protocol of Yang et al., Sci. Rep. 8:2575, 2018, and a TXM photon-noise variant)."
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
        default=[5, 10, 20, 30],
        metavar="PERCENT",
        help="Gaussian sigma in %% of the max clean normalised projection (default 5 10 20 30)",
    )
    parser.add_argument(
        "--dose-ratio",
        type=float,
        nargs="+",
        default=[10],
        metavar="R",
        help="Poisson mode: long / short exposure ratios (default 10)",
    )
    parser.add_argument(
        "--dose-ladder",
        type=float,
        nargs="*",
        default=list(DOSE_LADDER),
        metavar="R",
        help="Poisson mode: dose ratios of extra plain scans for the equivalent dose "
        f"(default {' '.join(f'{r:g}' for r in DOSE_LADDER)}; 1 and --dose-ratio are always included)",
    )
    parser.add_argument(
        "--exposure", type=float, default=1.0, help="Poisson mode: long exposure, s (default 1)"
    )
    parser.add_argument(
        "--phantom",
        choices=("spheres", "textured"),
        default="spheres",
        help="the paper's cube of spheres, or a porous fibre-reinforced matrix with cracks (default spheres)",
    )
    parser.add_argument(
        "--flux",
        type=float,
        default=300.0,
        help="Poisson mode: open-beam photons per pixel per second, i.e. quanta per pixel at full dose "
        "with --exposure 1 (default 300; beamlines: 300-3000)",
    )
    parser.add_argument(
        "--psf",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="Poisson mode: detector blur, Gaussian sigma in pixels, on signal and noise (default 0)",
    )
    parser.add_argument(
        "--dead-pixels", type=int, default=0, help="Poisson mode: pixels that detect no light (default 0)"
    )
    parser.add_argument(
        "--reference",
        choices=("detector", "sample"),
        default="detector",
        help="Poisson mode: score against the noise-free projections as the detector records them (its blur "
        "included: default) or against the sample's exact line integrals (also scores the lost resolution)",
    )
    parser.add_argument(
        "--training-seeds",
        type=int,
        default=1,
        metavar="N",
        help="run every learned method (paper, n2i, hybrid, n2i-counts) N times with different training "
        "seeds on the same data and report the spread (default 1)",
    )
    parser.add_argument(
        "--judge-views",
        choices=("held-out", "in-view"),
        default="held-out",
        help="how the long exposures judge the methods: as auto does, each run again without the frames on "
        "the long exposures' views (held-out, default), or the results on every frame (in-view: biased "
        "towards smoothing)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        metavar="METHOD",
        help=f"methods to run: {', '.join(METHODS)} or auto (= {AUTO_WITH_PAIRS}) "
        f"(default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--train-angles",
        type=_angle_set,
        default=(0.0, 45.0, 90.0),
        metavar="DEG,DEG",
        help="angles of the reference pairs, comma-separated (default 0,45,90)",
    )
    parser.add_argument(
        "--model", default=None, help=f"projection-CNN architecture (default {PROJECTION_TRAINING['model']})"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=PROJECTION_TRAINING["epochs"],
        help=f"projection-CNN epochs, at most (default {PROJECTION_TRAINING['epochs']})",
    )
    parser.add_argument(
        "--n2i-steps",
        type=int,
        default=N2I_OPTIONS["steps"],
        help=f"Noise2Inverse optimisation steps (default {N2I_OPTIONS['steps']})",
    )
    parser.add_argument(
        "--slices", type=int, default=None, help="central slices scored (default size/8; 0: all)"
    )
    parser.add_argument(
        "--margin",
        type=int,
        default=8,
        help="detector rows run beyond the scored slices, each side (default 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of phantom, noise and training")
    parser.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run every method's reconstruction slabs and learned inference as tasks on this Dask "
        "scheduler ('local': an in-process cluster)",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="write Markdown, JSON and PNG figures here"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bars and per-level lines on stderr (default: when stderr is a terminal)",
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
        Exit status: 0 on success, 2 for invalid parameters (checked before anything runs).
    """
    from .config import EvaluationConfig
    from .protocol import run_evaluation
    from .report import machine_info, to_json, to_markdown, write_report

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    cfg = EvaluationConfig(
        mode=args.mode,
        size=args.size,
        angles=args.angles,
        noise_levels=tuple(v / 100.0 for v in args.noise),
        dose_ratios=tuple(args.dose_ratio),
        dose_ladder=tuple(args.dose_ladder),
        exposure=args.exposure,
        train_angles=tuple(args.train_angles),
        methods=tuple(args.methods),
        epochs=args.epochs,
        model=args.model,
        n2i_steps=args.n2i_steps,
        slices=args.slices,
        margin=args.margin,
        seed=args.seed,
        phantom=args.phantom,
        flux=args.flux,
        psf_sigma=args.psf,
        dead_pixels=args.dead_pixels,
        judge_views=args.judge_views,
        training_seeds=args.training_seeds,
        reference=args.reference,
        progress=progress,
        dask_scheduler=args.dask_scheduler,
    )
    try:
        cfg.validate()
        if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out!r} exists and is not a directory")
    except ValueError as exc:
        print(f"lowdose-tomo evaluate: error: {exc}", file=sys.stderr)
        return 2
    from bluesky_lowdose.engine import SchedulerUnreachable

    try:
        result = run_evaluation(cfg)
    except SchedulerUnreachable as exc:
        print(f"lowdose-tomo evaluate: error: {exc}", file=sys.stderr)
        return 1
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
