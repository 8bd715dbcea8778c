"""The long exposures as the judge: a quality score for every reconstruction, without a ground truth.

Every scan of this package has long exposures at a few angles.  A reconstruction, projected
again at those angles (:func:`bluesky_lowdose.recon.project.forward_project`), should give their
line integrals.  The score compares the two inside the object's shadow:

- **reference**: ``-log`` of the long transmission, filtered along the detector row with the
  reconstruction's apodisation window (``parzen``): an FBP followed by a projection returns the
  data at that resolution, so a perfect reconstruction of noise-free data scores high
  (36 dB on the 64^3 phantom, against 26 dB without the filter);
- **mask**: :func:`bluesky_lowdose.metrics.object_mask` of the reference (the shadow and two
  pixels around it; air is not scored);
- **scores**: PSNR (data range of the reference) and SSIM, per angle then pooled, as for volumes;
- **noise of the judge**: the long frames are noisy too.  From their photon statistics
  (``1 / (N0 T)`` per pixel, through the same window) the expected PSNR of a *perfect*
  reconstruction against them is ``ceiling_psnr_db``: scores near it cannot be told apart.
  Without photon statistics the noise is estimated from the long frames themselves (wavelet
  MAD, :func:`skimage.restoration.estimate_sigma`).

Methods that learn from the pairs (a projection step, BM3D tuned on the pairs) are judged on a
pair they did not see: with three or more pairs the last one is **held out** of their training
(:func:`holdout_index`; another with ``holdout=k``); with fewer they are judged on their training
pairs and the score is flagged ``in_sample`` (optimistic).  The raw reconstruction is always judged
on the same angles as the method, so the two numbers compare.  ``auto`` judges them
**leave-one-out**: once per pair, trained without it, the residuals pooled
(:meth:`LongExposureJudge.score_projections`), so they are judged on every pair as the methods
that do not learn from the pairs are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CONCENTRATED_ROWS", "HOLDOUT_MIN_PAIRS", "LongExposureJudge", "holdout_index", "make_judge"]

#: Pairs needed before one is held out of a pair-trained method's training.
HOLDOUT_MIN_PAIRS = 3
#: Slices projected at a time (bounded memory on on-disk volumes).
_SLAB = 32
#: A volume's excess error over the raw one counts as *concentrated* when this share of the
#: object's detector rows (at least one) carries all of it.
CONCENTRATED_ROWS = 0.05


def make_judge(
    long_frames: Any,
    angles_deg: Any,
    *,
    input: str = "transmission",
    open_beam_counts: Any = None,
    center: float | None = None,
    rows: slice | None = None,
) -> LongExposureJudge:
    """The judge of a scan's long frames in the pipeline's input units.

    Parameters
    ----------
    long_frames : numpy.ndarray
        ``(m, rows, width)`` long exposures: corrected transmission or line integrals.
    angles_deg : array_like
        Their angles.
    input : {"transmission", "line_integrals"}
        The units of ``long_frames``.
    open_beam_counts, center, rows
        As for :meth:`LongExposureJudge.from_transmission`.

    Returns
    -------
    LongExposureJudge
        The judge.
    """
    if input == "line_integrals":
        return LongExposureJudge(np.asarray(long_frames), np.asarray(angles_deg),
                                 open_beam_counts=open_beam_counts, center=center, rows=rows)  # fmt: skip
    return LongExposureJudge.from_transmission(long_frames, angles_deg, open_beam_counts=open_beam_counts,
                                               center=center, rows=rows)  # fmt: skip


def holdout_index(n_pairs: int) -> int | None:
    """The pair held out of pair-trained methods' training, or None when there are too few.

    Parameters
    ----------
    n_pairs : int
        Reference pairs available.

    Returns
    -------
    int or None
        ``n_pairs - 1`` when ``n_pairs >= HOLDOUT_MIN_PAIRS``.
    """
    return n_pairs - 1 if n_pairs >= HOLDOUT_MIN_PAIRS else None


@dataclass
class LongExposureJudge:
    """Scores reconstructions against the long exposures (see the module).

    Parameters
    ----------
    long_line_integrals : numpy.ndarray
        ``(m, rows, width)`` ``-log`` of the long transmission (the pipeline's units).
    angles_deg : numpy.ndarray
        ``(m,)`` their angles.
    open_beam_counts : float or numpy.ndarray, optional
        Detected photons of the open beam per pixel at the *long* exposure; None: the noise is
        estimated from the frames.
    center : float, optional
        Rotation axis column.
    filter : str
        The reconstruction's apodisation window.
    rows : slice, optional
        The detector rows judged (default all). ``auto`` runs its candidates on a slab cut from
        the detector and judges only its central rows: at the cut, every method sees an edge the
        whole scan does not have.
    """

    long_line_integrals: np.ndarray
    angles_deg: np.ndarray
    open_beam_counts: Any = None
    center: float | None = None
    filter: str = "parzen"
    rows: slice | None = None

    def __post_init__(self) -> None:
        from ..metrics import object_mask
        from ..recon.filters import apodize

        li = np.asarray(self.long_line_integrals, dtype=np.float32)
        if li.ndim != 3 or not len(li):
            raise ValueError(f"long line integrals must be (m, rows, width), got {li.shape}")
        if not np.all(np.isfinite(li)):
            raise ValueError("long line integrals contain NaN or infinite values")
        self.angles_deg = np.asarray(self.angles_deg, dtype=np.float64).reshape(-1)
        if self.angles_deg.shape != (len(li),):
            raise ValueError(f"{self.angles_deg.size} angle(s) for {len(li)} long frame(s)")
        self.reference = apodize(li, self.filter)
        self.mask = object_mask(self.reference)
        if not self.mask.any():
            self.mask[:] = True  # no shadow (empty beam): score everything
        if self.rows is not None:
            judged = np.zeros(li.shape[1], bool)
            judged[self.rows] = True
            if not judged.any():
                raise ValueError(f"rows {self.rows} hold none of the {li.shape[1]} detector rows")
            self.mask &= judged[None, :, None]
            if not self.mask.any():  # no shadow in those rows: score them all
                self.mask[:, judged] = True
        self.noise = self._noise(li)

    @classmethod
    def from_transmission(
        cls,
        long_transmission: Any,
        angles_deg: Any,
        *,
        open_beam_counts: Any = None,
        center: float | None = None,
        rows: slice | None = None,
    ) -> LongExposureJudge:
        """The judge of flat/dark-corrected long frames: ``-log`` with the pipeline's floor (half a
        photon of the long exposure where its counts are known).

        Parameters
        ----------
        long_transmission : numpy.ndarray
            ``(m, rows, width)`` corrected long frames.
        angles_deg : numpy.ndarray
            Their angles.
        open_beam_counts : float or numpy.ndarray, optional
            Open-beam photons per pixel at the long exposure.
        center : float, optional
            Rotation axis column.
        rows : slice, optional
            The detector rows judged (default all).

        Returns
        -------
        LongExposureJudge
            The judge.
        """
        from ..recon import transmission_to_line_integrals
        from .flatfield import log_floor

        li = transmission_to_line_integrals(long_transmission, floor=log_floor(open_beam_counts))
        return cls(li, np.asarray(angles_deg), open_beam_counts=open_beam_counts, center=center, rows=rows)

    def _noise(self, li: np.ndarray) -> dict[str, Any]:
        """Expected noise of the filtered reference and the PSNR a perfect reconstruction scores."""
        from ..metrics import data_range
        from ..recon.filters import apodize

        # energy of the window's impulse response: the factor on white-noise variance
        n = li.shape[-1]
        impulse = np.zeros((1, 1, n), np.float32)
        impulse[..., n // 2] = 1.0
        gain = float(np.sum(apodize(impulse, self.filter).astype(np.float64) ** 2))
        if self.open_beam_counts is not None:
            n0 = np.broadcast_to(np.asarray(self.open_beam_counts, np.float64), li.shape[1:])
            var = 1.0 / np.maximum(n0[None] * np.exp(-li.astype(np.float64)), 0.5)
            source = "photon statistics of the long frames (1 / (N0 T) per pixel)"
        else:
            from skimage.restoration import estimate_sigma

            sig = np.array([float(estimate_sigma(f.astype(np.float64))) for f in li])
            var = np.broadcast_to((sig**2)[:, None, None], li.shape)
            source = "estimated from the long frames (wavelet MAD)"
        rms = float(np.sqrt(np.mean(var[self.mask]) * gain))
        rng = data_range(self.reference)
        ceiling = float(20 * np.log10(rng / rms)) if rms > 0 else None
        return {"rms": rms, "ceiling_psnr_db": ceiling, "source": source, "window_variance_gain": gain}

    def indices(self, held_out: int | None) -> list[int]:
        """The pairs a volume is judged on: the held-out one, or all.

        Parameters
        ----------
        held_out : int or None
            Index of the pair held out of training.

        Returns
        -------
        list of int
            Pair indices.
        """
        return list(range(len(self.angles_deg))) if held_out is None else [int(held_out)]

    def project(self, volume: Any, which: list[int]) -> np.ndarray:
        """The volume's line integrals at the judged angles, slab by slab (on-disk volumes too).

        Parameters
        ----------
        volume : array_like or StoredArray
            ``(rows, width, width)``.
        which : list of int
            Pair indices.

        Returns
        -------
        numpy.ndarray
            ``(len(which), rows, width)``.
        """
        from ..recon.project import forward_project
        from ..recon.stored import StoredArray

        rows, width = self.reference.shape[1:]
        shape = tuple(volume.shape)
        if shape[0] != rows or shape[-1] != width:
            raise ValueError(f"a volume of {shape} does not match long frames of {(rows, width)}")
        out = np.empty((len(which), rows, width), np.float32)
        for a in range(0, rows, _SLAB):
            b = min(a + _SLAB, rows)
            slab = volume.slices(a, b) if isinstance(volume, StoredArray) else np.asarray(volume[a:b])
            out[:, a:b] = forward_project(slab, self.angles_deg[which], center=self.center, width=width)
        return out

    def score(self, volume: Any, *, held_out: int | None = None) -> dict[str, Any]:
        """PSNR and SSIM of the volume's projections against the long frames, inside the shadow.

        Parameters
        ----------
        volume : array_like or StoredArray
            A reconstruction ``(rows, width, width)`` of the scan.
        held_out : int, optional
            Judge only on this pair (held out of the method's training).

        Returns
        -------
        dict
            ``psnr_db``, ``ssim``, ``angles_deg``.
        """
        which = self.indices(held_out)
        return self.score_projections(self.project(volume, which), which)

    def score_projections(self, test: Any, which: list[int]) -> dict[str, Any]:
        """PSNR and SSIM of line integrals at the judged angles (:meth:`project`'s output), pooled.

        Leave-one-out judging puts together, for each pair, the projection of the volume made
        without that pair (:func:`~bluesky_lowdose.pipeline.select_method`).

        Parameters
        ----------
        test : numpy.ndarray
            ``(len(which), rows, width)``.
        which : list of int
            The pairs they are at.

        Returns
        -------
        dict
            ``psnr_db``, ``ssim``, ``angles_deg``.
        """
        from ..metrics import compare

        test = np.asarray(test, np.float32)
        if test.shape != (len(which), *self.reference.shape[1:]):
            want = (len(which), *self.reference.shape[1:])
            raise ValueError(f"projections of {test.shape} for {len(which)} pair(s): expected {want}")
        sc = compare(test, self.reference[which], mask=self.mask[which])
        return {"psnr_db": float(sc["psnr"]), "ssim": float(sc["ssim"]),
                "angles_deg": [float(a) for a in self.angles_deg[which]]}  # fmt: skip

    def where_worse(self, volume: Any, raw: Any, *, held_out: int | None = None) -> dict[str, Any] | None:
        """Where a volume that scores below the raw one loses: spread, or in a few detector rows.

        A projection sums a slice along the whole ray, so an error that fills one slice (e.g. an
        object's face bleeding into the empty slice beyond it) weighs as much as the whole volume's
        noise. The squared residual of both volumes is summed per detector row (= slice) inside the
        shadow; when the rows where the volume is worse than raw, taken largest first, carry all of
        its excess within :data:`CONCENTRATED_ROWS` of the object's rows, they are named, with the
        scores without them.

        Parameters
        ----------
        volume, raw : array_like or StoredArray
            The enhanced and the raw reconstruction of the scan.
        held_out : int, optional
            Judge only on this pair.

        Returns
        -------
        dict or None
            None when the volume is not worse in total, else ``concentrated`` (bool), ``rows`` (the
            worst rows, largest excess first, at most the concentrated share), ``object_rows``, and
            when concentrated ``psnr_db`` / ``raw_psnr_db`` without those rows.
        """
        from ..metrics import psnr

        which = self.indices(held_out)
        ref, mask = self.reference[which], self.mask[which]
        test, plain = self.project(volume, which), self.project(raw, which)
        per_row = [((p - ref) ** 2 * mask).sum(axis=(0, 2), dtype=np.float64) for p in (test, plain)]
        excess = per_row[0] - per_row[1]
        total = float(excess.sum())
        if total <= 0:
            return None
        object_rows = int(mask.any(axis=(0, 2)).sum())
        limit = max(1, int(np.ceil(CONCENTRATED_ROWS * object_rows)))
        order = [int(r) for r in np.argsort(excess)[::-1] if excess[r] > 0]
        # the worse rows together carry at least the total (the better rows only subtract from it)
        enough = min(int(np.searchsorted(np.cumsum(excess[order]), total)), len(order) - 1) + 1
        out: dict[str, Any] = {"concentrated": enough <= limit, "rows": order[: min(enough, limit)],
                               "object_rows": object_rows}  # fmt: skip
        if out["concentrated"]:
            rest = mask.copy()
            rest[:, out["rows"]] = False
            out["psnr_db"] = float(psnr(test, ref, mask=rest))
            out["raw_psnr_db"] = float(psnr(plain, ref, mask=rest))
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of how scores are made.

        Returns
        -------
        dict
            Reference, mask, noise of the judge, angles.
        """
        return {
            "reference": f"-log of the long exposures, {self.filter} window along the rows",
            "test": "forward projection of the reconstruction at the long exposures' angles",
            "mask": "metrics.object_mask of the reference (the object's shadow + 2 pixels)",
            "rows": None if self.rows is None else [*self.rows.indices(self.reference.shape[1])[:2]],
            "angles_deg": [float(a) for a in self.angles_deg],
            "noise_rms": self.noise["rms"],
            "ceiling_psnr_db": self.noise["ceiling_psnr_db"],
            "noise_source": self.noise["source"],
            "function": "bluesky_lowdose.pipeline.judge.LongExposureJudge",
        }
