"""The model registry in Tiled: trained models recorded with their instrument key and score,
reused (registry="only") or fine-tuned (registry="auto", the default) on a second sample of the
same instrument, never on another."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from plan_helpers import run_engine

from bluesky_lowdose.callbacks import ProjectionEnhancer
from bluesky_lowdose.devices import make_devices
from bluesky_lowdose.plans import lowdose_tomo_scan
from bluesky_lowdose.storage.models import ModelRegistry, instrument_id, instrument_key

pytestmark = [pytest.mark.tiled, pytest.mark.slow]

SCAN = {"num_angles": 61, "num_darks": 2, "num_flats": 2, "reference_angles": (0.0, 45.0, 90.0, 135.0),
        "short_exposure": 0.2}  # fmt: skip
N2I = {"steps": 300, "crop": 16, "batch_size": 16}
# this test's own instrument (the session's Tiled server holds other tests' models too)
BEAMLINE = {"instrument": {"beamline": f"registry-test-{uuid.uuid4().hex[:8]}", "energy_kev": 8.0}}


def _run(server, client, size: int, seed: int, **kw) -> tuple[object, dict]:
    txm = make_devices(server.layout.detector, size=size, seed=seed)
    enhancer = ProjectionEnhancer(client, n2i_options=N2I, backup_directory=server.layout.backup,
                                  volume_directory=server.layout.volumes, preview_interval=None,
                                  **kw)  # fmt: skip
    starts: list[dict] = []
    with run_engine() as RE:
        RE.subscribe(enhancer)
        RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
        plan = lowdose_tomo_scan(
            txm.detector, txm.rotation, txm.shutter, txm.sample_stage, md=BEAMLINE, **SCAN
        )
        (uid,) = RE(plan)
        assert enhancer.wait(timeout=600)
    enhancer.close()
    return enhancer.results[uid], starts[0]


def _cli(*argv: str) -> int:
    from bluesky_lowdose.cli import main

    return main(list(argv))


def test_registry_records_models_and_reuses_them_only_on_their_instrument(
    tiled_server, tiled_client, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("TILED_API_KEY", tiled_server.api_key)
    uri = tiled_server.uri
    registry = ModelRegistry(tiled_client)
    # 1. a complete n2i run records its denoiser, keyed on the instrument, with its score
    first, start = _run(tiled_server, tiled_client, 32, seed=1, method="n2i")
    assert first.status == "complete", first.reasons
    uid = first.registry["registered"]["slices"]
    assert "projection" not in first.registry["registered"]  # n2i trains no projection CNN
    meta = registry.metadata(uid)
    assert meta["instrument"] == instrument_key(start, (32, 32)) and meta["kind"] == "slices"
    assert meta["instrument_id"] == first.registry["instrument_id"] == instrument_id(meta["instrument"])
    assert meta["model_hash"] == first.slice_model.model_hash and meta["raw_uid"] == first.raw_uid
    assert meta["score"]["psnr_db"] > meta["score"]["raw_psnr_db"], meta["score"]  # beat raw: offered
    assert _cli("models", "list", "--tiled-uri", uri, "--json") == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    mine = [m for m in listed if m["instrument_id"] == first.registry["instrument_id"]]
    assert [m["uid"] for m in mine] == [uid] and mine[0]["method"] == "n2i"
    assert {"uid", "method", "instrument", "raw_uid"} <= set(mine[0])
    assert mine[0]["instrument"]["beamline"] == BEAMLINE["instrument"]["beamline"]  # declared, as given

    # 2. registry="only", another sample on the same instrument: the model is applied, not trained
    second, _ = _run(tiled_server, tiled_client, 32, seed=2, registry="only")
    assert second.status == "complete", second.reasons
    assert second.registry["used"] == {"slices": uid} and second.method == "n2i"
    assert second.slice_model.model_hash == meta["model_hash"]
    assert second.provenance["slice_step"]["reused_model"] is True and not second.n2i_history
    assert "registered" not in second.registry  # nothing was trained, nothing new recorded
    processed = tiled_client["processed"][second.processed_uid].metadata["start"]["provenance"]
    assert processed["registry"]["used"] == {"slices": uid}

    # 2b. registry="auto" (the default), a third sample: the registered denoiser's result comes
    # first (stream first_result, volume recon_first), then it is fine-tuned for a fifth of the
    # steps and the fine-tuned model is registered as started from it
    warm, _ = _run(tiled_server, tiled_client, 32, seed=4)
    assert warm.status == "complete", warm.reasons
    assert warm.registry["started_from"] == {"slices": uid} and warm.method == "n2i"
    assert warm.first_result is not None and warm.first_result["model_uid"] == uid
    assert 0 < warm.first_result["seconds_after_last_frame"] <= warm.timings["after_last_frame_s"]
    ws = warm.provenance["warm_start"]
    assert (
        ws["kept"] in ("first", "fine_tuned")
        and ws["first"]["psnr_db"] == warm.first_result["quality_psnr_db"]
    )
    run = tiled_client["processed"][warm.processed_uid]
    assert "first_result" in run and "recon_first" in run
    row = run["first_result"].read()
    assert row["model_uid"].values[0] == uid and "first result" in row["label"].values[0]
    from bluesky_lowdose.storage import stream_array

    first_vol = np.asarray(stream_array(run, "recon_first", "slice").read())
    final_vol = np.asarray(stream_array(run, "recon_enhanced", "slice").read())
    assert first_vol.shape == final_vol.shape == (32, 32, 32)
    if ws["kept"] == "fine_tuned":
        tuned = warm.slice_model.provenance
        assert tuned["fine_tuned_from"] == meta["model_hash"] != warm.slice_model.model_hash
        assert tuned["hyperparameters"]["steps"] == N2I["steps"] // 5  # FINE_TUNE["fraction"] = 0.2
        assert not np.array_equal(first_vol, final_vol)
        new = warm.registry["registered"]["slices"]
        assert registry.metadata(new)["started_from"] == uid
    else:  # the long exposures preferred the registered model: the same volume, with a warning
        np.testing.assert_array_equal(first_vol, final_vol)
        assert any("first result is kept" in w for w in warm.warnings), warm.warnings

    # 3. another instrument (another frame size): never used silently; trains and says so
    third, _ = _run(tiled_server, tiled_client, 24, seed=3, method="n2i", registry="only")
    assert "used" not in third.registry
    assert any("no registered model for instrument" in w for w in third.warnings), third.warnings
    assert third.registry["instrument_id"] != first.registry["instrument_id"]

    # 4. export and import: the archive round-trips (safe mode), an import needs its instrument
    out = tmp_path / "n2i.keras"
    assert _cli("models", "export", uid, str(out), "--tiled-uri", uri) == 0
    from bluesky_lowdose.model import from_bytes

    assert from_bytes(out.read_bytes()).model_hash == meta["model_hash"]
    assert _cli("models", "import", str(out), "--tiled-uri", uri) == 2  # no kind/method/instrument
    other = {"detector": "elsewhere", "frame_shape": [32, 32]}
    assert _cli("models", "import", str(out), "--tiled-uri", uri, "--kind", "slices", "--method", "n2i",
                "--instrument", json.dumps(other)) == 0  # fmt: skip
    imported = capsys.readouterr().out.strip().splitlines()[-1]
    assert registry.metadata(imported)["instrument_id"] == instrument_id(other) != meta["instrument_id"]
    assert _cli("models", "show", "no-such-model", "--tiled-uri", uri) == 2
    np.testing.assert_array_equal(np.frombuffer(registry.blob(imported), np.uint8),
                                  np.frombuffer(out.read_bytes(), np.uint8))  # fmt: skip


def test_a_registered_model_is_offered_only_to_methods_that_use_it() -> None:
    """The kinds a run asks the registry for: the slice denoiser for Noise2Inverse methods, the
    projection CNN for CNN methods (never for BM3D/median/TV, whose step has no model), either
    for auto — unless a projection model was given, which then decides the method."""
    from bluesky_lowdose.callbacks.job import RunJob, RunResult

    def wants(**kw) -> set[str]:
        enhancer = ProjectionEnhancer(None, **kw)
        job = RunJob(enhancer, {"uid": "u", "lowdose": {}}, RunResult(raw_uid="u"))
        return {kind for kind in ("projection", "slices") if job._wants(kind)}

    assert wants(method="bm3d") == set() and wants(method="median") == set()
    assert wants(method="paper") == {"projection"} and wants(method="n2i") == {"slices"}
    assert wants(method="hybrid") == wants(method="auto") == {"projection", "slices"}
    assert wants(method="auto", model=object()) == set()  # the given model is the method ("paper")


def test_a_run_whose_auto_chose_a_blend_registers_no_model(tiled_client) -> None:
    """The registered models decide a later run's method: a CNN and a Noise2Inverse denoiser found
    together make it ``hybrid``, which is not the blend ``paper+n2i`` that chose them. Such a run
    registers nothing and says why; a run of one method is unaffected."""
    from bluesky_lowdose.callbacks.job import RunJob, RunResult

    def register(method: str) -> dict:
        enhancer = ProjectionEnhancer(tiled_client, registry="record", reconstruct=False)
        job = RunJob(enhancer, {"uid": "u", "lowdose": {}}, RunResult(raw_uid="u"))
        job.instrument = {"instrument": BEAMLINE["instrument"], "blend-test": True}
        job.result.status, job.result.method = "complete", method
        job.result.enhancer = job.result.slice_model = None  # (nothing to register either way)
        job._register_models()
        return job.result.registry

    assert "blend" in register("paper+n2i")["not_registered"]
    assert "not_registered" not in register("paper")
