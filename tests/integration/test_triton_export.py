from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner

from photodedup.cli import main
from photodedup.engines import create_engine
from photodedup.imaging import decode_for_model

from helpers import encode, photo, tiny_settings


def test_export_triton_repository_runs_and_matches_our_engine(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = CliRunner().invoke(
        main,
        [
            "export-triton",
            str(out),
            "--model",
            "photodedup-tiny",
            "--weights",
            "random",
            "--cache-dir",
            str(model_cache),
            "--gpus",
            "2",
            "--max-batch-size",
            "64",
            "--max-queue-delay-ms",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    model_dir = out / "photodedup_image_encoder"
    config = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 64" in config
    assert "max_queue_delay_microseconds: 3000" in config and "gpus: [0, 1]" in config
    assert re.search(r"dims: \[64\]", config) and 'value: "FP16"' in config
    # The exported model runs and gives our engine's vectors once normalised.
    images = [decode_for_model(encode(photo(i)), 224, 10**8) for i in range(3)]
    engine = create_engine(tiny_settings(model_cache, engine="onnx"), "cpu")
    batch = engine.preprocess(images)
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (raw,) = session.run(None, {"pixel_values": batch})
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(raw, engine.infer(batch), atol=1e-5)
    assert sys.modules.get("tensorrt") is None
