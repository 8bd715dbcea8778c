"""The scan pipeline: flat/dark policy, pairing, methods, reconstruction, scoring (pure).

One module owns every scientific step from corrected frames to a scored volume; the
streaming enhancer (:mod:`bluesky_lowdose.callbacks`), ``lowdose-tomo enhance`` and
``lowdose-tomo evaluate`` all call it.  No bluesky, ophyd or tiled imports; Keras, numba and
BM3D are imported on first use.

- :func:`enhance_scan` -- one scan, one method, the whole chain; :class:`ScanResult`
- :class:`ScanPipeline` -- the same, fed frame by frame (streaming)
- :data:`METHODS`, :func:`resolve_method` -- ``"paper"``, ``"n2i"``, ``"hybrid"``, baselines
- :func:`flat_field`, :class:`FlatField`, :func:`photon_statistics` -- the flat/dark policy and
  the open-beam photon counts
- :func:`debias_line_integrals` -- the low-count ``-log`` bias correction
- :func:`match_angles`, :func:`angle_difference`, :func:`nominal_angle` -- angle matching
- :func:`score_volume` -- PSNR and SSIM inside the object
- :class:`LongExposureJudge` -- every result scored against the long exposures (no ground truth)
- :func:`select_method` -- ``method="auto"``: candidates on a slab, the long exposures choose
- :func:`dead_pixel_mask`, :func:`fill_dead_pixels` -- pixels that see no beam
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from .angles import DEFAULT_TOLERANCE, angle_difference, match_angles, nominal_angle
from .flatfield import (
    FlatField,
    PhotonStatistics,
    dead_pixel_mask,
    fill_dead_pixels,
    flat_field,
    photon_statistics,
)
from .methods import (
    AUTO_SPEC,
    AUTO_WITH_PAIRS,
    AUTO_WITHOUT_PAIRS,
    FINE_TUNE,
    METHODS,
    N2I_OPTIONS,
    PROJECTION_TRAINING,
    MethodSpec,
    blend_name,
    blend_parts,
    denoising_domain,
    method_description,
    method_spec,
    resolve_method,
)
from .scan import ScanPipeline, ScanResult
from .scoring import score_volume
from .stack import enhance_scan, pair_from_projections

__all__ = [
    "AUTO_SPEC",
    "AUTO_WITHOUT_PAIRS",
    "AUTO_WITH_PAIRS",
    "DEFAULT_TOLERANCE",
    "FINE_TUNE",
    "METHODS",
    "N2I_OPTIONS",
    "PROJECTION_TRAINING",
    "FlatField",
    "LongExposureJudge",
    "MethodSpec",
    "PhotonStatistics",
    "ScanPipeline",
    "ScanResult",
    "angle_difference",
    "blend_name",
    "blend_parts",
    "dead_pixel_mask",
    "debias_line_integrals",
    "denoising_domain",
    "enhance_scan",
    "fill_dead_pixels",
    "flat_field",
    "match_angles",
    "method_description",
    "method_spec",
    "nominal_angle",
    "pair_from_projections",
    "photon_statistics",
    "resolve_method",
    "score_volume",
    "select_method",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {"debias_line_integrals": "logbias", "LongExposureJudge": "judge", "select_method": "auto"},
    __all__,
)
