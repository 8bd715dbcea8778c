"""Networks, training mechanics, enhance, persistence and provenance (tiny and fast)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import keras  # a hard dependency: its absence must fail, not skip
import numpy as np
import pytest

from bluesky_lowdose import model as bm
from bluesky_lowdose.model.networks import InversePSNRLoss, build_network

RNG = np.random.default_rng(7)


def _refs(n: int = 2, shape: tuple[int, int] = (32, 32)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = np.stack([0.5 + 0.3 * np.sin(xx / (3 + k)) * np.cos(yy / 4) for k in range(n)])
    short = clean + 0.05 * RNG.standard_normal(clean.shape)
    long = clean + 0.01 * RNG.standard_normal(clean.shape)
    return short.astype(np.float32), long.astype(np.float32)


TINY = {"epochs": 2, "batch_size": 8, "base_filters": 4, "progress": False, "seed": 1}


@pytest.fixture(scope="module")
def refs() -> tuple[np.ndarray, np.ndarray]:
    return _refs()


@pytest.fixture(scope="module")
def unet(refs: tuple[np.ndarray, np.ndarray]) -> bm.Enhancer:
    return bm.train(*refs, model="unet", patch_size=16, stride=8, **TINY)


@pytest.fixture(scope="module")
def paper(refs: tuple[np.ndarray, np.ndarray]) -> bm.Enhancer:
    return bm.train(*refs, model="paper", patch_size=16, stride=8, **TINY)


# -- networks ------------------------------------------------------------------------------------
def test_unet_is_fully_convolutional_on_multiples_of_8() -> None:
    net = build_network("unet", base_filters=4)
    for shape in [(8, 8), (24, 40), (72, 16)]:
        out = net.predict_on_batch(np.zeros((2, *shape, 1), np.float32))
        assert out.shape == (2, *shape, 1)


def test_paper_network_layers_follow_the_paper() -> None:
    net = build_network("paper", patch_size=32, base_filters=16)
    convs = [layer for layer in net.layers if type(layer).__name__ == "Conv2D"]
    deconvs = [layer for layer in net.layers if type(layer).__name__ == "Conv2DTranspose"]
    assert len(convs) == 8 and len(deconvs) == 9
    assert convs[0].filters == 16 and max(c.filters for c in convs) == 64
    assert sum(c.strides[0] == 2 for c in convs) == 3 and sum(d.strides[0] == 2 for d in deconvs) == 3
    assert deconvs[0].filters == 64 and deconvs[-1].filters == 1
    assert net.get_layer("fc_reshape").output.shape[1:] == (4, 4, 1)
    assert net.output.shape[1:] == (32, 32, 1)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_network("paper", patch_size=20)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("resnet")


def test_inverse_psnr_loss_values() -> None:
    loss = InversePSNRLoss()
    y = np.full((2, 4, 4, 1), 0.5, np.float32)
    pred = y + np.array([0.1, 0.01], np.float32)[:, None, None, None]  # MSE 1e-2 and 1e-4: 20 and 40 dB
    per_sample = keras.ops.convert_to_numpy(loss.call(y, pred))
    np.testing.assert_allclose(per_sample, [1 / 20, 1 / 40], rtol=1e-4)
    # Diverged (MSE > 1, PSNR < 0 dB): the loss keeps growing instead of changing sign.
    big = keras.ops.convert_to_numpy(loss.call(y, y + 3.0))
    assert big[0] > 1
    assert np.isfinite(keras.ops.convert_to_numpy(loss.call(y, y))).all()


# -- enhance ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32, 32), (29, 45), (5, 3)])
@pytest.mark.parametrize("which", ["unet", "paper"])
def test_enhance_keeps_shape_and_dtype(
    which: str, shape: tuple[int, int], unet: bm.Enhancer, paper: bm.Enhancer
) -> None:
    enh = unet if which == "unet" else paper
    frame = RNG.uniform(0.1, 1.0, shape).astype(np.float64)
    out = enh.enhance(frame)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()
    stack = enh.enhance(np.stack([frame] * 3).astype(np.uint16), batch_size=2)
    assert stack.shape == (3, *shape) and stack.dtype == np.float32


def test_enhance_in_batches_matches_one_call(unet: bm.Enhancer, paper: bm.Enhancer) -> None:
    frames = RNG.uniform(0.1, 1.0, (5, 24, 40)).astype(np.float32)
    for enh in (unet, paper):
        whole = enh.enhance(frames)
        np.testing.assert_allclose(enh.enhance(frames, batch_size=1), whole, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(enh.enhance(frames[2]), whole[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["unet", "paper"])
def test_tta_averages_the_eight_flips_and_rotations_each_undone(
    which: str, unet: bm.Enhancer, paper: bm.Enhancer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models trained with augmentation average their 8 views by default; each view's output is
    turned back (non-square frames: rows and columns swap in between)."""
    enh = unet if which == "unet" else paper
    assert enh.provenance["hyperparameters"]["inference_tta"] is True and enh.tta
    frames = RNG.uniform(0.1, 1.0, (2, 24, 40)).astype(np.float32)
    views = []
    for k in range(4):
        for flip in (False, True):
            seen = np.rot90(frames[:, :, ::-1] if flip else frames, k, axes=(1, 2))
            back = np.rot90(enh.enhance(seen, tta=False), -k, axes=(1, 2))
            views.append(back[:, :, ::-1] if flip else back)
    averaged = enh.enhance(frames)
    np.testing.assert_allclose(averaged, np.mean(views, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enh.enhance(frames[1]), averaged[1], rtol=1e-5, atol=1e-6)
    from bluesky_lowdose.model import enhancer as module

    monkeypatch.setattr(module, "_PIXELS_PER_CALL", 24 * 40)  # one frame at a time: bounded memory
    np.testing.assert_allclose(enh.enhance(frames), averaged, rtol=1e-5, atol=1e-6)
    # the views differ (the network is not symmetric), so the average is not any one of them
    assert np.abs(views[0] - averaged).max() > 1e-4


def test_large_frames_are_tiled(unet: bm.Enhancer, monkeypatch: pytest.MonkeyPatch) -> None:
    from bluesky_lowdose.model import enhancer as module

    frame = RNG.uniform(0.1, 1.0, (70, 90)).astype(np.float32)
    whole = unet.enhance(frame)
    monkeypatch.setattr(module, "_TILE", 48)
    monkeypatch.setattr(module, "_TILE_OVERLAP", 24)
    tiled = unet.enhance(frame)
    assert tiled.shape == frame.shape
    # Tiles see less context: close to the whole-frame result away from tile borders, not equal.
    assert np.median(np.abs(tiled - whole)) < 0.05


def test_enhance_works_from_a_worker_thread(unet: bm.Enhancer) -> None:
    frames = RNG.uniform(0.1, 1.0, (2, 32, 32)).astype(np.float32)
    expected = unet.enhance(frames)
    results: dict[str, np.ndarray | BaseException] = {}

    def work() -> None:
        try:
            results["out"] = unet.enhance(frames)
        except BaseException as err:  # pragma: no cover - reported below
            results["out"] = err

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    np.testing.assert_array_equal(results["out"], expected)


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.full((8, 8), np.nan), ValueError, "NaN"),
        (np.zeros((2, 8, 8), complex), TypeError, "real numbers"),
        (np.zeros(8), ValueError, "shape"),
        ("abc", TypeError, "real numbers"),
    ],
)
def test_enhance_rejects_bad_frames(unet: bm.Enhancer, frames: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        unet.enhance(frames)


# -- persistence and provenance ------------------------------------------------------------------
@pytest.mark.parametrize("which", ["unet", "paper"])
def test_save_load_gives_identical_outputs(
    which: str, unet: bm.Enhancer, paper: bm.Enhancer, tmp_path: Path
) -> None:
    enh = unet if which == "unet" else paper
    frames = RNG.uniform(0.1, 1.0, (2, 29, 35)).astype(np.float32)
    path = enh.save(tmp_path / "enhancer.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enhancer.keras"]  # no side files
    loaded = bm.load(path)
    assert loaded.provenance == enh.provenance
    assert loaded.normalization == enh.normalization
    np.testing.assert_array_equal(loaded.enhance(frames), enh.enhance(frames))

    data = enh.to_bytes()
    assert isinstance(data, bytes) and data[:2] == b"PK"
    again = bm.from_bytes(np.frombuffer(data, np.uint8))  # as stored in Tiled
    np.testing.assert_array_equal(again.enhance(frames), enh.enhance(frames))
    # a model stream read back from Tiled: one event, (1, N)
    again = bm.from_bytes(np.frombuffer(data, np.uint8)[None])
    np.testing.assert_array_equal(again.enhance(frames), enh.enhance(frames))


def test_persistence_errors(unet: bm.Enhancer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.keras"):
        unet.save(tmp_path / "enhancer.h5")
    with pytest.raises(FileNotFoundError):
        bm.load(tmp_path / "missing.keras")
    with pytest.raises(TypeError):
        bm.from_bytes("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one model"):
        bm.from_bytes(np.zeros((2, 8), np.uint8))  # two models in one array
    with pytest.raises(ValueError, match="no data"):
        bm.from_bytes(b"")
    with pytest.raises(ValueError, match="not a readable"):
        bm.from_bytes(b"garbage")
    other = tmp_path / "plain.keras"
    keras.saving.save_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]), other)
    with pytest.raises(ValueError, match="not written by bluesky_lowdose"):
        bm.load(other)


def test_an_archive_with_edited_normalisation_is_refused(unet: bm.Enhancer, tmp_path: Path) -> None:
    """The weights had a digest; the normalisation (every frame's scale in and out of the network)
    loaded silently when edited. Both are checked now."""
    import zipfile

    from bluesky_lowdose.model.networks import METADATA_LAYER

    path = unet.save(tmp_path / "enhancer.keras")
    edited = tmp_path / "edited.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(x for x in config["config"]["layers"] if x["config"]["name"] == METADATA_LAYER)
                payload = json.loads(layer["config"]["payload"])
                payload["normalization"]["mean"] *= 1.5  # e.g. "fixed" by hand for another detector
                layer["config"]["payload"] = json.dumps(payload, sort_keys=True)
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="normalisation does not match"):
        bm.load(edited)
    assert bm.load(path).normalization == unet.normalization  # the untouched archive still loads


def test_provenance_is_json_and_meaningful(unet: bm.Enhancer, refs: tuple[np.ndarray, np.ndarray]) -> None:
    prov = json.loads(json.dumps(unet.provenance))
    assert prov["architecture"] == "unet"
    hp = prov["hyperparameters"]
    assert hp["patch_size"] == 16 and hp["stride"] == 8 and hp["base_filters"] == 4 and hp["epochs"] == 2
    data = prov["training_data"]
    assert data["n_pairs"] == 2 and data["short_refs"]["shape"] == [2, 32, 32]
    assert data["short_refs"]["dtype"] == "<f4" and len(data["long_refs"]["sha256"]) == 64
    assert len(prov["history"]["loss"]) == prov["epochs_run"] == len(prov["history"]["val_loss"])
    assert prov["best_val_loss"] == min(prov["history"]["val_loss"])
    assert prov["model_hash"] == unet.model_hash and len(unet.model_hash) == 64
    assert prov["versions"]["keras"] == keras.__version__ and prov["versions"]["keras_backend"]
    assert prov["seed"] == 1 and prov["wall_time_s"] > 0
    assert set(prov["normalization"]) == {"mean", "std", "z_low", "z_high", "margin"}
    assert unet.provenance is not unet.provenance  # a copy each time


# -- training mechanics --------------------------------------------------------------------------
def test_training_is_seeded(refs: tuple[np.ndarray, np.ndarray], unet: bm.Enhancer) -> None:
    again = bm.train(*refs, model="unet", patch_size=16, stride=8, **TINY)
    frames = refs[0][:1]
    np.testing.assert_allclose(again.enhance(frames), unet.enhance(frames), rtol=1e-4, atol=1e-5)


def test_on_epoch_hook_progress_and_single_pair(
    refs: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    enh = bm.train(
        refs[0][:1],
        refs[1][:1],
        patch_size=16,
        stride=4,
        epochs=2,
        patience=None,
        base_filters=4,
        max_patches=10,
        progress=True,
        on_epoch=lambda e, logs: calls.append((e, logs)),
    )
    assert [c[0] for c in calls] == [0, 1]
    assert all(isinstance(v, float) for v in calls[0][1].values()) and "val_loss" in calls[0][1]
    data = enh.provenance["training_data"]
    assert data["n_pairs"] == 1 and data["n_available_patches"] == 25
    assert data["n_train_patches"] + data["n_validation_patches"] == 10
    err = capsys.readouterr().err
    assert "training" in err and "2/2" in err  # the tqdm bar over epochs


def test_divergence_raises_training_error(refs: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(bm.TrainingError, match="diverged"):
        bm.train(
            *refs, patch_size=16, stride=16, epochs=3, base_filters=4, learning_rate=1e30, progress=False
        )
    assert issubclass(bm.TrainingError, RuntimeError)


def _bad(kind: str) -> tuple[object, object, dict[str, object]]:
    s, lg = _refs(2, (24, 24))
    cases: dict[str, tuple[object, object, dict[str, object]]] = {
        "mismatch": (s, lg[:, :, :20], {}),
        "zero pairs": (s[:0], lg[:0], {}),
        "2-D": (s[0], lg[0], {}),
        "nan": (np.where(s == s[0, 0, 0], np.nan, s), lg, {}),
        "inf": (s, np.where(lg == lg[0, 0, 0], np.inf, lg), {}),
        "constant": (np.ones_like(s), lg, {}),
        "complex": (s.astype(complex), lg, {}),
        "bool": (s > 0.5, lg, {}),
        "object": (s.astype(object), lg, {}),
        "small": (s, lg, {"patch_size": 32}),
        "patch not /8": (s, lg, {"patch_size": 12}),
        "no val split": (s[:1, :16, :16], lg[:1, :16, :16], {"patch_size": 16}),
        "model": (s, lg, {"model": "resnet"}),
        "epochs": (s, lg, {"epochs": 0}),
        "fraction": (s, lg, {"validation_fraction": 0.9}),
        "lr": (s, lg, {"learning_rate": -1.0}),
        "hook": (s, lg, {"on_epoch": 3}),
        "max_patches": (s, lg, {"max_patches": 1}),
    }
    return cases[kind]


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("mismatch", ValueError, "same shape"),
        ("zero pairs", ValueError, "at least one"),
        ("2-D", ValueError, r"\(N, H, W\)"),
        ("nan", ValueError, "NaN"),
        ("inf", ValueError, "NaN or infinite"),
        ("constant", ValueError, "constant"),
        ("complex", TypeError, "real numbers"),
        ("bool", TypeError, "real numbers"),
        ("object", TypeError, "real numbers"),
        ("small", ValueError, "smaller than a patch"),
        ("patch not /8", ValueError, "multiple of 8"),
        ("no val split", ValueError, "too few"),
        ("model", ValueError, "unknown model"),
        ("epochs", ValueError, "epochs"),
        ("fraction", ValueError, "validation_fraction"),
        ("lr", ValueError, "learning_rate"),
        ("hook", TypeError, "on_epoch"),
        ("max_patches", ValueError, "max_patches"),
    ],
)
def test_train_rejects_bad_input(kind: str, error: type, match: str) -> None:
    short, long, kwargs = _bad(kind)
    with pytest.raises(error, match=match):
        bm.train(short, long, progress=False, **kwargs)  # type: ignore[arg-type]


# -- the whole enhance pipeline with an identity network -------------------------------------------
def _identity_enhancer(architecture: str, patch_size: int) -> bm.Enhancer:
    from bluesky_lowdose.model.enhancer import weights_sha256
    from bluesky_lowdose.model.networks import METADATA_LAYER, EnhancerMetadata

    shape = (patch_size, patch_size, 1) if architecture == "paper" else (None, None, 1)
    inputs = keras.Input(shape)
    net = keras.Model(inputs, EnhancerMetadata(name=METADATA_LAYER)(inputs))
    norm = bm.Normalization(mean=0.5, std=0.2, z_low=-3.0, z_high=3.0)
    prov = {
        "architecture": architecture,
        "hyperparameters": {"patch_size": patch_size, "inference_stride": max(patch_size // 2, 1)},
        "model_hash": weights_sha256(net),
    }
    return bm.Enhancer(net, norm, prov)


@pytest.mark.parametrize("shape", [(8, 8), (13, 21), (40, 17)])
@pytest.mark.parametrize("stride", [1, 3, 5, 8])
def test_identity_network_reproduces_frames_through_patches(shape: tuple[int, int], stride: int) -> None:
    enh = _identity_enhancer("paper", 8)
    frame = RNG.uniform(0.05, 1.1, shape).astype(np.float32)
    np.testing.assert_allclose(enh.enhance(frame, stride=stride), frame, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(8, 8), (13, 21), (3, 50)])
def test_identity_network_reproduces_frames_whole(shape: tuple[int, int]) -> None:
    enh = _identity_enhancer("unet", 16)
    frames = RNG.uniform(0.05, 1.1, (3, *shape)).astype(np.float32)
    np.testing.assert_allclose(enh.enhance(frames), frames, rtol=1e-6, atol=1e-7)


# -- precision -----------------------------------------------------------------------------------
def test_auto_precision_is_bfloat16_only_on_processors_that_compute_it(tmp_path: Path) -> None:
    from bluesky_lowdose.model import precision

    plain, native = tmp_path / "plain", tmp_path / "native"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\n")
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert precision.cpu_flags(plain) == {"fpu", "sse2", "avx2", "avx512f"}
    assert precision.cpu_flags(tmp_path / "absent") == frozenset()
    assert not precision.native_bfloat16(plain)
    assert precision.native_bfloat16(native) == (keras.backend.backend() == "tensorflow")
    assert precision.training_policy("float32") == "float32"
    assert precision.training_policy("bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.training_policy("float16")


def test_bfloat16_training_gives_a_float32_model_close_to_float32_training(
    refs: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    models = {p: bm.train(*refs, model="unet", patch_size=16, stride=8, precision=p, **TINY)
              for p in ("float32", "bfloat16")}  # fmt: skip
    frames = refs[0][:2]
    out = {p: m.enhance(frames) for p, m in models.items()}
    for p, policy in (("float32", "float32"), ("bfloat16", "mixed_bfloat16")):
        enh = models[p]
        assert enh.provenance["hyperparameters"]["precision"] == policy
        # the model kept and used is float32 whatever training computed in
        assert {layer.dtype_policy.name for layer in enh.network.layers} == {"float32"}
        assert out[p].dtype == np.float32 and np.isfinite(out[p]).all()
        enh.save(tmp_path / f"{p}.keras")
        np.testing.assert_array_equal(bm.load(tmp_path / f"{p}.keras").enhance(frames), out[p])
    # same seed, same data: the arithmetic alone differs, so the outputs differ a little
    diff = np.abs(out["bfloat16"] - out["float32"])
    assert 0 < diff.max() < 0.1 * float(np.ptp(out["float32"]))


def test_small_frames_get_a_smaller_default_patch_with_enough_positions() -> None:
    from bluesky_lowdose.model.training import MIN_PATCH_POSITIONS, default_patch_size

    # 32^2 patches on 32^2 frames: one position per frame (four pairs gave two training patches)
    assert default_patch_size(32, (32, 32)) == 24 and 9 * 9 >= MIN_PATCH_POSITIONS
    assert default_patch_size(32, (48, 128)) == 32  # auto's slabs keep the default
    assert default_patch_size(32, (32, 64)) == 32  # 33 positions
    assert default_patch_size(32, (256, 256)) == 32
    assert default_patch_size(32, (16, 16)) == 8  # 9^2 positions (16^2 patches would have 1)
    assert default_patch_size(32, (8, 8)) == 8
    short, long = _refs(n=2, shape=(32, 32))
    enh = bm.train(short, long, model="paper", epochs=1, base_filters=4, progress=False)
    assert enh.patch_size == 24 and enh.provenance["training_data"]["n_train_patches"] > 100
