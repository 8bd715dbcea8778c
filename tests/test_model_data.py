"""Pure-numpy parts of bluesky_lowdose.model: patches, normalisation, input checks, lazy import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bluesky_lowdose.model import Normalization, extract_patches, patch_starts, reassemble_patches
from bluesky_lowdose.model._checks import as_frames
from bluesky_lowdose.model.patches import dihedral


def test_import_is_light() -> None:
    code = (
        "import sys, bluesky_lowdose.model as m\n"
        "names = ('tensorflow', 'keras', 'torch', 'jax', 'bm3d', 'skimage')\n"
        "heavy = [k for k in names if k in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(m.extract_patches)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("shape", [(7, 9), (16, 16), (33, 17), (64, 41), (65, 65)])
@pytest.mark.parametrize("patch", [1, 4, 7])
@pytest.mark.parametrize("stride_kind", ["one", "three", "patch", "odd"])
def test_identity_reassembly_is_exact(shape: tuple[int, int], patch: int, stride_kind: str) -> None:
    stride = {"one": 1, "three": 3, "patch": patch, "odd": max(1, patch - 2)}[stride_kind]
    stride = min(stride, patch)
    rng = np.random.default_rng(sum(shape) + patch)
    image = (rng.standard_normal(shape) * 1e3 + 5).astype(np.float32)
    patches, corners = extract_patches(image, patch, stride)
    assert patches.shape[1:] == (patch, patch)
    out = reassemble_patches(patches, corners, shape)
    np.testing.assert_array_equal(out, image)


def test_last_patch_is_flush_with_the_edge() -> None:
    np.testing.assert_array_equal(patch_starts(10, 4, 3), [0, 3, 6])
    np.testing.assert_array_equal(patch_starts(11, 4, 3), [0, 3, 6, 7])
    np.testing.assert_array_equal(patch_starts(4, 4, 2), [0])
    with pytest.raises(ValueError, match="larger than the frame"):
        patch_starts(3, 4, 1)


def test_reassembly_rejects_gaps_and_mismatches() -> None:
    image = np.zeros((10, 10), np.float32)
    patches, corners = extract_patches(image, 3, 5)  # stride > patch leaves gaps
    with pytest.raises(ValueError, match="cover"):
        reassemble_patches(patches, corners, image.shape)
    with pytest.raises(ValueError, match="do not match"):
        reassemble_patches(patches[:-1], corners, image.shape)


def test_reassembly_averages_overlaps() -> None:
    patches = np.stack([np.zeros((2, 2)), np.ones((2, 2))])
    out = reassemble_patches(patches, np.array([[0, 0], [0, 1]]), (2, 3))
    np.testing.assert_allclose(out, [[0, 0.5, 1], [0, 0.5, 1]])


def test_dihedral_covers_all_eight_and_keeps_pairs_aligned() -> None:
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    outs = {dihedral(x, np.array([op])).tobytes() for op in range(8)}
    assert len(outs) == 8
    np.testing.assert_array_equal(dihedral(x, np.array([0])), x)


def test_normalization_round_trip_and_range() -> None:
    rng = np.random.default_rng(0)
    short = rng.uniform(0.05, 1.1, (2, 16, 16))
    long = rng.uniform(0.1, 1.0, (2, 16, 16))
    norm = Normalization.fit(short, long, margin=0.1)
    y = norm.forward(short, dtype=np.float64)
    assert 0 < y.min() < 0.1 and 0.9 < y.max() < 1
    np.testing.assert_allclose(norm.inverse(y, dtype=np.float64), short, rtol=1e-12)
    frame = rng.uniform(0, 1.6, (8, 8)).astype(np.float32)  # brighter than training: not clipped
    back = norm.inverse(norm.forward(frame))
    np.testing.assert_allclose(back, frame, rtol=1e-6, atol=1e-6)
    assert norm.forward(np.array([1.6])).item() > 1
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_normalization_rejects_constant_data() -> None:
    with pytest.raises(ValueError, match="constant"):
        Normalization.fit(np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="margin"):
        Normalization.fit(np.arange(4.0), margin=-1)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (np.zeros((4, 4), complex), TypeError, "real numbers"),
        (np.zeros((4, 4), bool), TypeError, "real numbers"),
        (np.array([[object()]]), TypeError, "real numbers"),
        ("frames", TypeError, "real numbers"),
        (np.array([["a", "b"]]), TypeError, "real numbers"),
        (np.zeros(4), ValueError, "shape"),
        (np.zeros((1, 2, 3, 4)), ValueError, "shape"),
        (np.zeros((0, 4, 4)), ValueError, "empty"),
        (np.array([[0.0, np.nan]]), ValueError, "NaN"),
        (np.array([[[0.0, np.inf]]]), ValueError, "frame 0"),
    ],
)
def test_as_frames_rejects_bad_input(data: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        as_frames(data, "frames")


def test_as_frames_accepts_integers_and_single_frames() -> None:
    frames, single = as_frames(np.ones((3, 4), np.uint16), "x")
    assert single and frames.shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        as_frames(np.ones((3, 4)), "x", allow_single=False)
