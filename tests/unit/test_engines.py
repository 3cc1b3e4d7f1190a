"""Engines on real (generated) photos with the tiny model, and ViT-B-32 parity with random weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from photodedup.engines import AUTO_ORDER, create_engine, engine_class
from photodedup.engines.base import Engine
from photodedup.errors import EngineUnavailableError, ModelUnavailableError
from photodedup.imaging import decode_for_model

from helpers import encode, photo, tiny_settings


def _photos(n: int, size: int = 224) -> list[np.ndarray]:
    return [decode_for_model(encode(photo(i, (320, 240))), size, 10**8) for i in range(n)]


@pytest.mark.parametrize("name", ["torch", "onnx"])
def test_engine_contract(name: str, model_cache: Path) -> None:
    engine = create_engine(tiny_settings(model_cache, engine=name), "cpu")
    try:
        assert isinstance(engine, Engine) and engine.name == name
        engine.warmup([1, 3])
        out = engine.infer(engine.preprocess(_photos(5)))
        assert out.shape == (5, engine.info.embedding_dim) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        assert engine.info.model_id == "photodedup-tiny@" + engine.info.weights_id
        # Different photos give different vectors; the same photo gives the same vector in any batch.
        assert float(out[0] @ out[1]) < 0.9999
        single = engine.infer(engine.preprocess(_photos(1)))
        np.testing.assert_allclose(single[0], out[0], atol=1e-5)
    finally:
        engine.close()


def test_torch_and_onnx_agree_on_vit_b32(model_cache: Path) -> None:
    """Same (random, seeded) weights, real photos: cosine >= 0.999 between the two runtimes."""
    settings = tiny_settings(model_cache, model_name="ViT-B-32")
    images = _photos(6)
    vecs = {}
    for name in ("torch", "onnx"):
        engine = create_engine(settings.replace(engine=name), "cpu")
        vecs[name] = engine.infer(engine.preprocess(images))
        assert engine.info.embedding_dim == 512
        engine.close()
    cos = (vecs["torch"] * vecs["onnx"]).sum(axis=1)
    assert cos.min() >= 0.999


def test_onnx_cache_hit_never_imports_torch(model_cache: Path) -> None:
    create_engine(tiny_settings(model_cache, engine="onnx"), "cpu").close()  # make sure it is exported
    code = textwrap.dedent(
        f"""
        import sys
        from photodedup.settings import Settings
        from photodedup.engines import create_engine
        e = create_engine(Settings(model_name="photodedup-tiny", weights="random", engine="onnx",
                                   cache_dir={str(model_cache)!r}), "cpu")
        assert e.info.embedding_dim == 64
        bad = [m for m in sys.modules if m == "torch" or m.startswith("tensorrt")]
        print("IMPORTED", bad)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in out.stdout


def test_auto_prefers_onnx_on_cpu(model_cache: Path) -> None:
    assert AUTO_ORDER["cpu"][0] == "onnx"
    engine = create_engine(tiny_settings(model_cache, engine="auto"), "cpu")
    assert engine.name == "onnx"
    engine.close()


def test_unknown_engine_and_missing_cuda_are_clear_errors(model_cache: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="unknown engine"):
        engine_class("tensorflow")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailableError, match="no engine can run on cuda:0"):
            create_engine(tiny_settings(model_cache, devices=["cuda:0"]), "cuda:0")


def test_missing_weights_file_is_a_clear_error(model_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        create_engine(tiny_settings(model_cache, weights=str(tmp_path / "nope.bin"), engine="torch"), "cpu")


def test_corrupt_weights_file_is_a_clear_error(model_cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="cannot load weights file"):
        create_engine(tiny_settings(model_cache, weights=str(bad), engine="torch"), "cpu")


def test_local_checkpoint_file_loads_through_open_clip(model_cache: Path, tmp_path: Path) -> None:
    import open_clip
    import torch

    from photodedup.engines.openclip_loader import _register_configs

    _register_configs()
    torch.manual_seed(123)
    model = open_clip.create_model("photodedup-tiny", pretrained=None)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    engine = create_engine(tiny_settings(model_cache, weights=str(ckpt), engine="torch"), "cpu")
    images = _photos(2)
    with torch.inference_mode():
        x = engine.preprocess(images)
        ref = model.visual.eval()(x).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(engine.infer(x), ref, atol=1e-5)
    assert engine.info.weights_id.startswith("file-")


def test_offline_pretrained_tag_fails_fast_with_one_clear_message(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An empty hub cache, even on a machine that has these weights cached (HF_HOME is read at import).
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    settings = tiny_settings(model_cache, model_name="ViT-B-32", weights=None, engine="torch")
    with pytest.raises(ModelUnavailableError, match="offline and not in the local cache") as err:
        create_engine(settings, "cpu")
    assert "\n" not in str(err.value)


def test_export_cache_key_follows_our_bundled_config(model_cache: Path) -> None:
    from photodedup.engines.onnx_export import export_path
    from photodedup.engines.openclip_loader import bundled_config_hash

    tiny = export_path(tiny_settings(model_cache))
    assert bundled_config_hash("photodedup-tiny") in tiny.name
    assert (
        bundled_config_hash("ViT-B-32") is None
        and "cfg" not in export_path(tiny_settings(model_cache, model_name="ViT-B-32")).name
    )


def test_a_runtime_that_fails_to_load_falls_back_to_the_next_engine(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from photodedup.engines import onnx_engine

    def broken_export(*_args: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(onnx_engine, "ensure_onnx", broken_export)
    engine = create_engine(tiny_settings(model_cache, engine="auto"), "cpu")
    assert engine.name == "torch"
    with pytest.raises(EngineUnavailableError, match="read-only file system"):
        create_engine(tiny_settings(model_cache, engine="onnx"), "cpu")
