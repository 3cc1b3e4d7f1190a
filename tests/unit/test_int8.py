"""CPU INT8 for the ONNX engine: self-check verdicts, cache keys, `auto` by (faked) CPU features, model ids."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from photodedup.engines import create_engine
from photodedup.engines.onnx_export import export_path
from photodedup.engines.onnx_int8 import (
    Int8Model,
    Recipe,
    check_path,
    choose_int8,
    cpu_flags,
    ensure_int8,
    int8_path,
)
from photodedup.engines.selfcheck import ParityResult, check_images, check_parity

from helpers import tiny_settings

PASSED = ParityResult(True, 0.9998, 0, 16, "ok")
FAILED = ParityResult(False, 0.91, 3, 16, "min cosine 0.91000 < 0.995")
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
NO_VNNI = frozenset({"avx2", "fma"})


def _model(check: ParityResult, speedup: float) -> Int8Model:
    return Int8Model(Path("m.onnx"), Path("f.onnx"), None, check, speedup)  # type: ignore[arg-type]


def test_parity_accepts_small_noise_and_rejects_a_drift_or_a_swapped_neighbour() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 64))
    assert check_parity(ref, ref + 1e-3 * rng.standard_normal(ref.shape)).passed
    drift = check_parity(ref, ref + 0.5 * rng.standard_normal(ref.shape))
    assert not drift.passed and "min cosine" in drift.reason
    # Image 1 is a near copy of 0; a candidate that moves 1 next to 2 keeps cosines high but breaks order.
    pairs = ref.copy()
    pairs[1] = ref[0] + 0.05 * rng.standard_normal(64)
    cand = pairs.copy()
    cand[1] = 0.97 * pairs[1] / np.linalg.norm(pairs[1]) * np.linalg.norm(ref[2]) + 0.25 * ref[2]
    swapped = check_parity(pairs, cand, min_cosine=0.0)
    assert not swapped.passed and "nearest neighbour changed" in swapped.reason


def test_check_images_are_fixed_photo_like_and_model_sized() -> None:
    a, b = check_images(8, 64), check_images(8, 64)
    assert len(a) == 8 and all(x.shape == (64, 64, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len({x.tobytes() for x in a}) == 8


def test_int8_cache_sits_beside_the_fp32_export_and_keys_precision_runtime_and_cpu(model_cache: Path) -> None:
    fp32 = export_path(tiny_settings(model_cache))
    plain, per_channel = int8_path(fp32, Recipe(False, False, False)), int8_path(fp32, Recipe(True, True, True))
    assert plain.parent == fp32.parent and plain.name.startswith(fp32.stem) and plain != fp32
    assert "qint8" in plain.name and per_channel != plain and "-pc" in per_channel.name
    assert check_path(plain, VNNI) != check_path(plain, NO_VNNI)
    import onnxruntime

    assert f"ort{onnxruntime.__version__}" in check_path(plain, VNNI).name


def test_cpu_flags_are_read_from_cpuinfo_text() -> None:
    x86 = "processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"
    assert "avx512_vnni" in cpu_flags(x86) and "asimddp" in cpu_flags(arm) and cpu_flags("") == frozenset()


@pytest.mark.parametrize(
    ("want", "check", "speedup", "flags", "expected"),
    [
        ("auto", PASSED, 1.1, VNNI, True),  # VNNI is enough when INT8 is not measured slower
        ("auto", PASSED, 0.5, VNNI, False),  # ... a tiny model can be (quantise/dequantise overhead)
        ("auto", PASSED, 1.1, NO_VNNI, False),  # no VNNI and too little gain
        ("auto", PASSED, 1.6, NO_VNNI, True),  # measured gain decides without VNNI
        ("auto", FAILED, 3.0, VNNI, False),  # never without a passed self-check
        ("int8", PASSED, 0.9, NO_VNNI, True),  # asked for explicitly
        ("int8", FAILED, 3.0, VNNI, False),
    ],
)
def test_auto_chooses_int8_by_cpu_features_and_measured_gain(
    want: str, check: ParityResult, speedup: float, flags: frozenset[str], expected: bool
) -> None:
    use, reason = choose_int8(want, _model(check, speedup), flags)
    assert use is expected and "\n" not in reason
    if not check.passed:
        assert "self-check failed" in reason


@pytest.mark.slow
@pytest.mark.timeout(900)  # exporting and quantising ViT-B-32 takes minutes on a busy 2-core machine
def test_faithful_quantisation_passes_its_self_check_on_vit_b32(model_cache: Path) -> None:
    model = ensure_int8(tiny_settings(model_cache, model_name="ViT-B-32"))
    assert model.check.passed, model.check.reason
    assert model.check.min_cosine >= 0.995 and model.path.is_file() and model.speedup > 0


def _corrupt_a_scale(src: Path, dst: Path) -> None:
    """Multiply the first weight scale of the quantised graph by 20: a wrong, but loadable, model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    scale = next(t for t in model.graph.initializer if t.name.endswith("_scale") and "weight" in t.name.lower())
    arr = numpy_helper.to_array(scale) * 20
    scale.CopyFrom(numpy_helper.from_array(arr.astype(arr.dtype), scale.name))
    onnx.save(model, str(dst))


def test_a_broken_quantisation_is_refused_and_fp32_serves(
    model_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    settings = tiny_settings(cache, engine="onnx", precision="int8")
    good = ensure_int8(settings)  # quantise once, then break it in place and forget the cached verdict
    _corrupt_a_scale(good.path, good.path)
    for f in good.path.parent.glob(f"{good.path.stem}.check-*.json"):
        f.unlink()
    with caplog.at_level(logging.WARNING):
        engine = create_engine(settings, "cpu")
    try:
        assert engine.precision == "fp32" and not engine.info.model_id.endswith("+int8")
        lines = [r.getMessage() for r in caplog.records if "self-check failed" in r.getMessage()]
        assert len(lines) == 1 and "serving fp32" in lines[0]
    finally:
        engine.close()


def test_fp32_and_int8_model_ids_differ_and_getinfo_detail_names_the_check(model_cache: Path) -> None:
    fp32 = create_engine(tiny_settings(model_cache, engine="onnx", precision="fp32"), "cpu")
    int8 = create_engine(tiny_settings(model_cache, engine="onnx", precision="int8"), "cpu")
    try:
        assert fp32.precision == "fp32" and int8.precision == "int8"
        assert int8.info.model_id == fp32.info.model_id + "+int8"
        assert "int8 self-check passed" in int8.status().detail
        vec = int8.infer(int8.preprocess(check_images(4, int8.info.preprocessing.input_size)))
        np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    finally:
        fp32.close()
        int8.close()


def test_real_thumbnails_that_break_int8_switch_the_engine_to_fp32_before_any_vector_leaves(model_cache: Path) -> None:
    engine = create_engine(tiny_settings(model_cache, engine="onnx", precision="int8"), "cpu")
    try:
        images = check_images(6, engine.info.preprocessing.input_size)
        assert engine.verify(images).passed and engine.precision == "int8"
        engine._session.run = _scrambled(engine._session.run)  # an INT8 session that answers garbage
        result = engine.verify(images)
        assert result is not None and not result.passed
        assert engine.precision == "fp32" and not engine.info.model_id.endswith("+int8")
        assert engine.verify(images) is None  # fp32 needs no check
    finally:
        engine.close()


def _scrambled(run):  # noqa: ANN001, ANN202
    def wrapper(names, feeds):  # noqa: ANN001, ANN202
        (out,) = run(names, feeds)
        return [np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)]

    return wrapper
