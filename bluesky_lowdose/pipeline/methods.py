"""The pipeline's methods, their defaults and how ``"auto"`` resolves (pure data, no imports).

Methods (:data:`METHODS`):

============== ===== ============================================ ==================================
method         pairs projection step (before the log)            slice step (after reconstruction)
============== ===== ============================================ ==================================
``none``       no    --                                           --
``paper``      yes   CNN trained on the long/short pairs (Yang)   --
``n2i``        no    -- (low-count ``-log`` bias corrected)        Noise2Inverse over the rotation
``hybrid``     yes   CNN trained on the pairs                     Noise2Inverse over the rotation
``bm3d``       yes   BM3D, sigma tuned on the pairs               --
``median``     yes   median filter tuned on the pairs             --
``tv``         yes   total variation tuned on the pairs           --
``bm3d-slices`` no   -- (bias corrected)                          BM3D, sigma tuned on the split
============== ===== ============================================ ==================================

``"auto"`` with long exposures (and their angles) tries the candidates of
:mod:`~bluesky_lowdose.pipeline.auto` on a slab of the scan and keeps the one the long exposures
judge best (never one below the raw reconstruction); without them it is
:data:`AUTO_WITHOUT_PAIRS` (the best method measured in ``docs/evaluation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTO_SPEC",
    "AUTO_WITHOUT_PAIRS",
    "AUTO_WITH_PAIRS",
    "FINE_TUNE",
    "METHODS",
    "N2I_OPTIONS",
    "PROJECTION_TRAINING",
    "MethodSpec",
    "blend_name",
    "blend_parts",
    "denoising_domain",
    "method_description",
    "method_spec",
    "resolve_method",
]


@dataclass(frozen=True)
class MethodSpec:
    """What a method does.

    Attributes
    ----------
    pairs : bool
        Needs long/short reference pairs.
    projection : str or None
        Projection step: ``"cnn"`` or a classical filter name.
    slices : str or None
        Slice step: ``"n2i"`` or ``"bm3d"``.
    debias : bool
        Corrects the low-count bias of ``-log`` when photon statistics are given.
    description : str
        One line for provenance and reports.
    split : {"angles", "counts"}
        How the slice step's independent halves are made: disjoint angle subsets, or a binomial
        split of every frame's detected photons into two half-dose frames at every angle
        (needs photon statistics).
    """

    pairs: bool
    projection: str | None
    slices: str | None
    debias: bool
    description: str
    split: str = "angles"


METHODS: dict[str, MethodSpec] = {
    "none": MethodSpec(False, None, None, False, "no enhancement: flat/dark correction, -log, FBP"),
    "paper": MethodSpec(True, "cnn", None, False,
                        "Yang et al., Sci. Rep. 8:2575 (2018): CNN trained on long/short reference pairs "
                        "enhances every projection"),
    "n2i": MethodSpec(False, None, "n2i", True,
                      "Noise2Inverse (Hendriksen et al., IEEE TCI 2020): a CNN learns to denoise "
                      "reconstructed slices from disjoint angle subsets of the whole rotation"),
    "hybrid": MethodSpec(True, "cnn", "n2i", False,
                         "the paper's pair-trained CNN on projections, then Noise2Inverse on the slices"),
    "bm3d": MethodSpec(True, "bm3d", None, False, "BM3D on projections, sigma tuned on the reference pairs"),
    "median": MethodSpec(True, "median", None, False, "median filter on projections, tuned on the pairs"),
    "tv": MethodSpec(True, "tv", None, False, "total-variation denoising of projections, tuned on the pairs"),
    "bm3d-slices": MethodSpec(False, None, "bm3d", True,
                              "BM3D on reconstructed slices, sigma tuned so that the denoised reconstruction "
                              "of one angle subset best predicts the other's"),
    "n2i-counts": MethodSpec(False, None, "n2i", True,
                             "Noise2Inverse over a binomial split of the detected photons: two half-dose "
                             "scans over every angle (photon statistics; needs open-beam counts)",
                             split="counts"),
}  # fmt: skip

#: ``method="auto"`` with long exposures is a choice among candidates judged by them
#: (:mod:`~bluesky_lowdose.pipeline.auto`); without them it is :data:`AUTO_WITHOUT_PAIRS`.
#: ``AUTO_WITH_PAIRS`` is the candidate tried first after ``"none"`` and the method the evaluation
#: reports as the default's learned method.
AUTO_WITH_PAIRS = "n2i"
AUTO_WITHOUT_PAIRS = "n2i"
#: What ``"auto"`` is while it has not chosen yet.
AUTO_SPEC = MethodSpec(False, None, None, False,
                       "auto: the candidates run on a slab of the scan, the long exposures choose (never "
                       "below the raw reconstruction), the winner runs on the whole scan")  # fmt: skip


#: Joins the methods of a blend's name (``"paper+n2i"``): ``auto`` may return the mean of two
#: candidates' volumes (:func:`bluesky_lowdose.pipeline.auto.blends`).
BLEND_SEP = "+"


def denoising_domain(method: str) -> str | None:
    """Where a method denoises: ``"projections"`` or ``"slices"``; None for none or both.

    Parameters
    ----------
    method : str
        A key of :data:`METHODS`.

    Returns
    -------
    str or None
        The one domain it denoises in (what ``auto``'s blends pair across).
    """
    spec = METHODS[method]
    if (spec.projection is None) == (spec.slices is None):
        return None
    return "projections" if spec.projection is not None else "slices"


def blend_name(*methods: str) -> str:
    """The name of the blend (mean of the volumes) of ``methods``, e.g. ``"paper+n2i"``: one name
    whatever their order, the projection denoiser first, as the pipeline runs the steps.

    Parameters
    ----------
    *methods : str
        Keys of :data:`METHODS`.

    Returns
    -------
    str
        Their names joined by :data:`BLEND_SEP`.
    """
    return BLEND_SEP.join(sorted(methods, key=lambda m: denoising_domain(m) == "slices"))


def blend_parts(method: str) -> list[str]:
    """The methods a result's method is made of: ``[method]``, or a blend's parts.

    Parameters
    ----------
    method : str
        A key of :data:`METHODS` or a :func:`blend_name`.

    Returns
    -------
    list of str
        Keys of :data:`METHODS`.

    Raises
    ------
    ValueError
        A part that is not a method.
    """
    parts = method.split(BLEND_SEP)
    unknown = [m for m in parts if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {method!r}; choose among {', '.join(METHODS)}")
    return parts


def method_spec(method: str) -> MethodSpec:
    """What a result's method does: its :data:`METHODS` entry, or for a blend what its parts do
    together (pairs if either needs them; the CNN or Noise2Inverse step where a part has one).

    Parameters
    ----------
    method : str
        A key of :data:`METHODS`, ``"auto"`` or a :func:`blend_name`.

    Returns
    -------
    MethodSpec
        The specification.
    """
    if method == "auto":
        return AUTO_SPEC
    specs = [METHODS[m] for m in blend_parts(method)]
    if len(specs) == 1:
        return specs[0]

    def step(kind: str, learned: str) -> str | None:
        steps = [getattr(s, kind) for s in specs if getattr(s, kind) is not None]
        return learned if learned in steps else (steps[0] if steps else None)

    described = " and of ".join(s.description for s in specs)
    return MethodSpec(any(s.pairs for s in specs), step("projection", "cnn"), step("slices", "n2i"),
                      any(s.debias for s in specs), f"the mean of the volumes of {described}")  # fmt: skip


def method_description(method: str) -> str:
    """One line describing ``method`` (a key of :data:`METHODS`, ``"auto"`` or a blend).

    Parameters
    ----------
    method : str
        The method.

    Returns
    -------
    str
        Its description.
    """
    return method_spec(method).description


#: Training of the projection CNN (the paper's step): one set of defaults for every entry point.
PROJECTION_TRAINING: dict[str, Any] = {"model": "unet", "epochs": 25, "patience": 6}
#: Noise2Inverse options (see :func:`bluesky_lowdose.model.n2i.train_noise2inverse`).
N2I_OPTIONS: dict[str, Any] = {"steps": 4400, "crop": 64, "batch_size": 4}
#: Fine-tuning a registered model (``warm_start``): the fraction of the from-scratch steps
#: (Noise2Inverse) or epochs (projection network) and of the learning rate.
FINE_TUNE: dict[str, float] = {"fraction": 0.2, "learning_rate_fraction": 0.1}


def resolve_method(method: str, has_pairs: bool, *, has_projection_model: bool = False) -> str:
    """The method ``method`` stands for (``"auto"`` resolved), checked against the inputs.

    Parameters
    ----------
    method : str
        A key of :data:`METHODS` or ``"auto"``.
    has_pairs : bool
        Whether long/short reference pairs (or a trained projection model) are available.
    has_projection_model : bool
        A trained projection model was given: ``"auto"`` then applies it (``"paper"``).

    Returns
    -------
    str
        The method: ``"auto"`` stays ``"auto"`` when there are pairs (the long exposures choose at
        the end of the scan), else :data:`AUTO_WITHOUT_PAIRS`.

    Raises
    ------
    ValueError
        Unknown method, or one that needs pairs when there are none.
    """
    if method == "auto":
        if has_projection_model:
            return "paper"
        return "auto" if has_pairs else AUTO_WITHOUT_PAIRS
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose 'auto' or one of {', '.join(METHODS)}")
    if METHODS[method].pairs and not has_pairs:
        raise ValueError(
            f"method {method!r} needs long/short reference pairs (long_refs) or a trained projection model; "
            f"without them use 'n2i' or 'bm3d-slices'"
        )
    return method
