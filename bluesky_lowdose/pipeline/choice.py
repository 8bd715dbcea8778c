"""``auto``'s rules: which judged candidate it takes, and why.

Functions of ``auto``'s record (per candidate: its status, its judged gains over the raw
reconstruction, its recorrupted estimate, its whole scan's time), so they can be read, tested and
benchmarked apart from running the candidates (:mod:`~bluesky_lowdose.pipeline.auto`); only
:func:`pick_in_time` writes into it (what it passes over):

- the long exposures judging: :func:`eligible` (never below raw), :func:`race` (a pair-trained
  candidate far behind after its first run stops there), :func:`pick_winner` (the largest PSNR gain,
  ties within :data:`TIE_DB` broken by SSIM);
- the recorrupted scans judging, where the long exposures barely see the noise:
  :func:`noise_free_eligible` (surely above raw at the scan's own noise), :func:`pick_noise_free`;
- :func:`noise_warning`, where the long exposures judged a winner above what removing noise could give;
- the time: :func:`whole_scan_allowance` (:data:`WHOLE_SCAN_SHARE` of the budget), :func:`too_slow`
  and :func:`pick_in_time` (the judge's pick, or its next one whose whole scan would fit).
A candidate marked ``too_slow`` is not :func:`eligible` (nor :func:`noise_free_eligible`).
"""

from __future__ import annotations

from typing import Any

from .recorrupt import ALPHA

__all__ = [
    "NOISE_BOUND_MARGIN_DB",
    "NOISE_FREE_Z",
    "NOISE_SHARE_FLOOR",
    "RACE_DB",
    "TIE_DB",
    "WHOLE_SCAN_SHARE",
    "eligible",
    "noise_free_eligible",
    "noise_warning",
    "pick_in_time",
    "pick_noise_free",
    "pick_winner",
    "race",
    "too_slow",
    "whole_scan_allowance",
]

#: Judged PSNR gains this close (dB) to the best are a tie, broken by the larger SSIM gain.
TIE_DB = 0.1
#: A candidate that learns from the pairs stops after its first run when that run is judged more than
#: this (dB) behind the best candidate so far on the pair it did not see (:func:`race`). Measured on
#: the ten recorded judge cases (``benchmarks/bench_judge_ties.py``): a first run's lead on that
#: pair differed from its pooled leave-one-out lead by up to 2.2 dB either way; no candidate that
#: won pooled, or was truly best, was more than 0.3 dB behind there; 5 of 20 stopped, none of them
#: either, and every pick stayed the same (``docs/evaluation.md``, "Racing").
RACE_DB = 1.5
#: A winner judged more than this (dB) above what removing all of the scan's noise could give by the
#: long exposures (:func:`~bluesky_lowdose.pipeline.auto.noise_bound`) gets a warning: they measure
#: something else there (measured, docs/evaluation.md, "How much of the judge's residual is noise").
NOISE_BOUND_MARGIN_DB = 0.5
#: ... and only where noise is less than this share of the raw reconstruction's residual against the
#: long exposures: they barely see the noise. ``make demo`` (share 0.14, Noise2Inverse judged +1.45 dB
#: against a bound of +0.64 dB, +5.6 dB in truth) is not warned; the real-like cases (0.01-0.04) are.
NOISE_SHARE_FLOOR = 0.05
#: Where the recorrupted scans judge, a candidate is taken over the raw reconstruction only where the
#: least gain it has at the scan's own noise is this many standard errors above 0
#: (:meth:`~bluesky_lowdose.pipeline.recorrupt.NoiseFreeJudge.gain_at_scan_noise`). The estimate at the
#: recorrupted scan's 1.25 x the noise ran 0.5-1.1 dB above the gain on the scan at 64³ (real-like, 38
#: angles), and Noise2Inverse estimated +0.7 to +2.0 dB was 0.1 dB below raw there (docs/evaluation.md,
#: "How sure the recorrupted estimate is").
NOISE_FREE_Z = 2.0
#: ``auto``'s budget covers choosing and the winner's whole scan: the whole scan is given what is left
#: of (1 + this) x the budget when the choice is made, and at least this x the budget
#: (:func:`whole_scan_allowance`). At the default 150 s budget, a 128² scan's result then comes about
#: 3 minutes after its last frame: in ``make demo`` with that budget on a slow run, Noise2Inverse's
#: training was cut, BM3D on slices was judged 0.1 dB above it and won, and its whole scan took 67 s
#: more (241.6 s after the last frame, 2.7 dB below Noise2Inverse against the truth).
WHOLE_SCAN_SHARE = 0.2


def eligible(candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The candidates ``auto`` may choose: run, judged, not below raw in PSNR or in SSIM, and not
    passed over for time (``too_slow``, :func:`pick_in_time`).

    Parameters
    ----------
    candidates : dict
        ``auto``'s record per candidate (``status``, ``gain_psnr_db``, ``gain_ssim``).

    Returns
    -------
    dict
        Those records, in the same order.
    """
    return {
        m: e for m, e in candidates.items()
        if e.get("status") == "run" and "gain_psnr_db" in e and e["gain_psnr_db"] >= 0 and e["gain_ssim"] >= 0
        and "too_slow" not in e
    }  # fmt: skip


def race(
    candidates: dict[str, dict[str, Any]], gain_db: float, pair: int, race_db: float | None = RACE_DB
) -> tuple[str, float] | None:
    """Whether a pair-trained candidate stops after its first run (trained without ``pair``).

    Parameters
    ----------
    candidates : dict
        ``auto``'s record of the candidates run so far (``status``, ``gain_psnr_db``, ``gain_ssim``,
        ``gain_psnr_db_per_pair``).
    gain_db : float
        The first run's judged PSNR gain over raw on ``pair``, the pair it did not see.
    pair : int
        That pair's index.
    race_db : float or None
        The margin (None: never stop).

    Returns
    -------
    tuple or None
        ``(method, gain)``: the candidate not below raw with the largest gain on ``pair``, when it
        leads ``gain_db`` by more than ``race_db``; None: run the other folds.
    """
    if race_db is None:
        return None
    lead = [(m, e["gain_psnr_db_per_pair"][pair]) for m, e in eligible(candidates).items()
            if "gain_psnr_db_per_pair" in e]  # fmt: skip
    if not lead:
        return None
    best = max(lead, key=lambda t: t[1])
    return best if gain_db < best[1] - race_db else None


def pick_winner(candidates: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """``auto``'s choice from the candidates' judged gains over the raw reconstruction, and why.

    Eligible: run, judged, and not below raw in PSNR or in SSIM. The largest PSNR gain wins;
    gains within :data:`TIE_DB` of it are a tie, which the larger SSIM gain breaks. None eligible:
    ``"none"``.

    Measured on the ten recorded judge cases (``docs/evaluation.md``, "Leave-one-out"): a tie
    within 0.1 or 0.25 dB changed no pick there; within 0.5 dB or more, or SSIM alone, it picked
    worse (mean regret 0.51-1.02 dB against 0.21). On ``make demo`` Noise2Inverse (+1.43 dB /
    +0.017 SSIM) and BM3D on slices (+1.44 / +0.014) tie, and Noise2Inverse is 2.3 dB better
    against the simulator's truth.

    Parameters
    ----------
    candidates : dict
        ``auto``'s record per candidate (``status``, ``gain_psnr_db``, ``gain_ssim``).

    Returns
    -------
    tuple of str
        The winner, and the sentence that says why.
    """
    ok = eligible(candidates)
    if not ok:
        return "none", "no candidate beat the raw reconstruction against the long exposures"
    top = max(e["gain_psnr_db"] for e in ok.values())
    tied = {m: e for m, e in ok.items() if e["gain_psnr_db"] >= top - TIE_DB}
    winner = max(tied, key=lambda m: (tied[m]["gain_ssim"], tied[m]["gain_psnr_db"]))
    e = ok[winner]
    why = f"{winner}: {e['gain_psnr_db']:+.2f} dB / {e['gain_ssim']:+.3f} SSIM over the raw reconstruction"
    if len(tied) == 1:
        return winner, f"{why}, the largest gain of {len(ok)} candidate(s) not below it"
    others = ", ".join(f"{m} {tied[m]['gain_psnr_db']:+.2f} dB / {tied[m]['gain_ssim']:+.3f}"
                       for m in tied if m != winner)  # fmt: skip
    return winner, (f"{why}; tied within {TIE_DB:g} dB with {others}: the larger SSIM gain wins "
                    f"({len(ok)} candidate(s) not below raw)")  # fmt: skip


def noise_warning(record: dict[str, Any]) -> str | None:
    """The warning for an ``auto`` record whose winner is judged above what removing noise could give,
    where the long exposures barely see the noise (:data:`NOISE_SHARE_FLOOR`)."""
    if record.get("noise_free") is not None:  # chosen by the recorrupted scans, not the long exposures
        return None
    winner, noise = record.get("winner"), record.get("noise") or {}
    bound = noise.get("most_gain_db")
    gain = (record.get("candidates", {}).get(winner) or {}).get("gain_psnr_db")
    if winner in (None, "none") or bound is None or gain is None or gain <= bound + NOISE_BOUND_MARGIN_DB:
        return None
    if noise.get("share", 1.0) >= NOISE_SHARE_FLOOR:  # they see the noise: a larger gain may be real
        return None
    return (f"auto chose {winner!r}: the long exposures judge it {gain:+.2f} dB over the raw reconstruction, "
            f"more than removing all of this scan's noise could give ({bound:+.2f} dB; noise is "
            f"{noise['share']:.0%} of the raw reconstruction's residual against them). They are not "
            "measuring noise removal here (at high counts every denoiser scored below raw in simulation): "
            "compare with the raw reconstruction (kept beside it)")  # fmt: skip


def _estimated(candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recorrupted estimates of the candidates run (not ``none``)."""
    return {m: e["noise_free"] for m, e in candidates.items()
            if m != "none" and e.get("status") == "run" and "noise_free" in e}  # fmt: skip


def noise_free_eligible(candidates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The candidates run and estimated above the raw reconstruction by the recorrupted scans, at the
    scan's own noise and with :data:`NOISE_FREE_Z` standard errors to spare, and not passed over for
    time (``too_slow``).

    Parameters
    ----------
    candidates : dict
        ``auto``'s record per candidate.

    Returns
    -------
    dict
        Those records, in the same order.
    """
    return {m: candidates[m] for m, nf in _estimated(candidates).items()
            if nf["at_scan_noise_db"] - NOISE_FREE_Z * (nf["at_scan_noise_se_db"] or 0.0) > 0
            and "too_slow" not in candidates[m]}  # fmt: skip


def _at_scan_noise(estimate: dict[str, Any]) -> str:
    """A recorrupted estimate in words: its gain at the recorrupted noise and its least gain at the
    scan's own noise, with the standard error."""
    se = estimate["at_scan_noise_se_db"]
    return (f"{estimate['gain_psnr_db']:+.2f} dB at the recorrupted scan's noise ({1 + ALPHA**2:g} x the "
            f"scan's), at least {estimate['at_scan_noise_db']:+.2f}" + ("" if se is None else f" ± {se:.2f}")
            + " dB at its own")  # fmt: skip


def pick_noise_free(record: dict[str, Any]) -> tuple[str, str]:
    """``auto``'s choice where the recorrupted scans judge: the largest estimated PSNR gain over the raw
    reconstruction against the noise-free reconstruction, among the candidates surely above it at the
    scan's own noise (:func:`noise_free_eligible`); ``"none"`` where no candidate is.

    Parameters
    ----------
    record : dict
        ``auto``'s record (``candidates`` with ``noise_free``, ``noise``).

    Returns
    -------
    tuple of str
        The winner, and the sentence that says why.
    """
    share = (record.get("noise") or {}).get("share")
    seen = "" if share is None else f" (noise is {share:.1%} of the raw reconstruction's residual there)"
    reason = f"the long exposures barely see this scan's noise{seen}: judged by recorrupted scans"
    ok = noise_free_eligible(record["candidates"])
    if not ok:
        best = _estimated(record["candidates"])
        if best:
            top = max(best, key=lambda m: best[m]["gain_psnr_db"])
            if best[top]["gain_psnr_db"] > 0:
                return "none", (f"{reason}; the best candidate, {top}, is estimated "
                                f"{_at_scan_noise(best[top])}: not {NOISE_FREE_Z:g} standard errors above "
                                "the raw reconstruction, which is kept")  # fmt: skip
        return "none", f"{reason}, no candidate is estimated above the raw reconstruction"
    winner = max(ok, key=lambda m: ok[m]["noise_free"]["gain_psnr_db"])
    return winner, (f"{winner}: estimated {_at_scan_noise(ok[winner]['noise_free'])}, over the raw "
                    f"reconstruction against the noise-free one; the largest of {len(ok)} candidate(s) "
                    f"surely above it; {reason}")  # fmt: skip


def whole_scan_allowance(budget_s: float, elapsed_s: float) -> float:
    """Seconds the winner's whole scan may take once ``auto`` has chosen (:data:`WHOLE_SCAN_SHARE`).

    Parameters
    ----------
    budget_s : float
        ``auto``'s budget.
    elapsed_s : float
        Seconds since the candidates started.

    Returns
    -------
    float
        What is left of ``(1 + WHOLE_SCAN_SHARE) * budget_s``, at least ``WHOLE_SCAN_SHARE * budget_s``.
    """
    return max((1 + WHOLE_SCAN_SHARE) * budget_s - elapsed_s, WHOLE_SCAN_SHARE * budget_s)


def too_slow(choosable: dict[str, dict[str, Any]], allowed_s: float) -> dict[str, str]:
    """The candidates passed over because their whole scan would take too long, and why.

    A candidate (or blend) whose whole scan is estimated (``whole_scan_s``) to take longer than
    ``allowed_s`` is passed over, but only when another one, not ``none``, would fit: where none
    would, the judge's pick stands, as the time is spent whatever is taken.

    Parameters
    ----------
    choosable : dict
        The candidates the judge allows (:func:`eligible` or :func:`noise_free_eligible`), with
        ``whole_scan_s``.
    allowed_s : float
        :func:`whole_scan_allowance`.

    Returns
    -------
    dict
        Per candidate passed over, the sentence that says why (empty: none is).
    """
    timed = {m: e["whole_scan_s"] for m, e in choosable.items() if m != "none" and "whole_scan_s" in e}
    if not any(s <= allowed_s for s in timed.values()):
        return {}
    return {m: (f"its whole scan would take about {s:.0f} s, more than the {allowed_s:.0f} s left for it "
                "(auto's budget covers choosing and the winner's whole scan)")
            for m, s in timed.items() if s > allowed_s}  # fmt: skip


def pick_in_time(record: dict[str, Any], slow: dict[str, str]) -> tuple[str, str]:
    """``auto``'s choice with its whole scan in time: the judge's pick (:func:`pick_winner`, or
    :func:`pick_noise_free` where recorrupted scans judge), and while that is one of ``slow``
    (:func:`too_slow`), the next one's, each passed over marked ``too_slow`` in its record.

    Parameters
    ----------
    record : dict
        ``auto``'s record (``candidates``; ``noise_free`` where recorrupted scans judge; the
        ``whole_scan`` entry, if any, gets ``passed_over``).
    slow : dict
        The candidates whose whole scan would not fit, where another's would, and why.

    Returns
    -------
    tuple of str
        The winner, and the sentence that says why (with what was passed over and its judged gain).
    """
    noise_free = record.get("noise_free") is not None
    candidates = record["candidates"]

    def pick() -> tuple[str, str]:
        return pick_noise_free(record) if noise_free else pick_winner(candidates)

    winner, why = pick()
    passed = []
    while winner in slow:  # only those the judge would take: the others are not passed over
        entry = candidates[winner]
        entry["too_slow"] = slow[winner]
        gain = entry["noise_free"]["gain_psnr_db"] if noise_free else entry["gain_psnr_db"]
        passed.append(f"{winner} (judged {gain:+.2f} dB over raw): {slow[winner]}")
        winner, why = pick()
    if passed:
        why += "; passed over for time: " + "; ".join(passed)
    if "whole_scan" in record:
        record["whole_scan"]["passed_over"] = [m for m, e in candidates.items() if "too_slow" in e]
    return winner, why
