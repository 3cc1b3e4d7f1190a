"""`export-onnx` then `--onnx-model`: the CPU image's path, serving an export without torch and the scan-only
packages."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from photodedup.cli import main
from photodedup.engines import create_engine
from photodedup.engines.onnx_engine import ensure_onnx
from photodedup.errors import ModelUnavailableError
from photodedup.imaging import decode_for_model
from photodedup.settings import Settings

from helpers import encode, photo, tiny_settings

# Runs in a fresh interpreter without the packages the CPU image leaves out (docker/requirements-cpu.txt):
# the serve command and the ONNX engine must work without them.
NO_TORCH_EMBED = """
import sys
sys.modules.update(dict.fromkeys(["torch", "torchvision", "open_clip", "onnx", "imagehash", "send2trash", "faiss"]))
import numpy as np
import photodedup.cli, photodedup.server.app  # the image's `photodedup serve`
from photodedup.engines import create_engine
from photodedup.imaging import decode_for_model
from photodedup.settings import Settings
engine = create_engine(Settings(onnx_model=sys.argv[1], cache_dir=sys.argv[2]), "cpu")
images = [decode_for_model(open(p, "rb").read(), 224, 10**8) for p in sys.argv[3:]]
np.save(sys.stdout.buffer, engine.infer(engine.preprocess(images)))
"""


def test_exported_model_serves_without_torch_and_matches_the_engine(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "model" / "model.onnx"
    result = CliRunner().invoke(
        main,
        ["export-onnx", str(out), "--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(model_cache)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["model_name"] == "photodedup-tiny"
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(encode(photo(i)))
    empty_cache = tmp_path / "empty-cache"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH_EMBED, str(out), str(empty_cache), *map(str, paths)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = np.load(io.BytesIO(proc.stdout))
    engine = create_engine(tiny_settings(model_cache, engine="onnx"), "cpu")
    want = engine.infer(engine.preprocess([decode_for_model(p.read_bytes(), 224, 10**8) for p in paths]))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not empty_cache.exists(), "a given --onnx-model must not touch the export cache"


def test_missing_onnx_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="model.onnx and model.json"):
        ensure_onnx(Settings(onnx_model=tmp_path / "model.onnx", cache_dir=tmp_path))
