"""A server asked for INT8 on CPU says so in GetInfo, its model id and its metrics; a scan whose first real
thumbnails break INT8 falls back to fp32 and stores its vectors under the fp32 id."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from prometheus_client import generate_latest

from photodedup.client.embedders import LocalEmbedder
from photodedup.engines import create_engine
from photodedup.v1 import embed_pb2, embed_pb2_grpc

from helpers import ServerThread, tiny_settings


def test_getinfo_and_metrics_say_int8_serves(model_cache: Path) -> None:
    st = ServerThread(tiny_settings(model_cache, engine="onnx", precision="int8", metrics=False)).start()
    try:
        with grpc.insecure_channel(st.address) as channel:
            info = embed_pb2_grpc.EmbedServiceStub(channel).GetInfo(embed_pb2.GetInfoRequest(), timeout=30)
        (engine,) = info.engines
        assert engine.precision == "int8" and "int8 self-check passed" in engine.detail
        assert info.model_id.endswith("+int8")
        text = generate_latest(st.server.metrics.registry).decode()
        assert 'photodedup_engine_info{device="cpu",engine="onnx",precision="int8"} 1.0' in text
    finally:
        st.stop()


def test_local_scan_falls_back_to_fp32_before_any_vector_when_real_thumbnails_break_int8(model_cache: Path) -> None:
    engine = create_engine(tiny_settings(model_cache, engine="onnx", precision="int8"), "cpu")
    int8_id = engine.info.model_id
    real_run = engine._session.run  # an INT8 session that answers garbage, as a bad quantisation would
    engine._session.run = lambda names, feeds: [
        np.random.default_rng(2).standard_normal(real_run(names, feeds)[0].shape).astype(np.float32)
    ]
    embedder = LocalEmbedder(engine, batch_size=4)
    assert embedder.model_id == int8_id
    rng = np.random.default_rng(0)
    for i in range(4):
        embedder.submit(str(i), rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    outcomes = list(embedder.drain())
    assert embedder.model_id == int8_id.removesuffix("+int8") and engine.precision == "fp32"
    assert len(outcomes) == 4 and all(o.vector is not None for o in outcomes)
    embedder.close()


def test_an_in_process_int8_scan_stores_and_groups_under_the_int8_id(model_cache: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from photodedup.cli import main

    from helpers import encode, photo

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        (photos / f"{i}.jpg").write_bytes(encode(photo(i)))
    args = [
        "scan",
        str(photos),
        "--local",
        "--model",
        "photodedup-tiny",
        "--weights",
        "random",
        "--engine",
        "onnx",
        "--cache-dir",
        str(model_cache),
        "--db",
        str(tmp_path / "index.sqlite3"),
        "--format",
        "json",
    ]
    first = CliRunner().invoke(main, [*args, "--precision", "int8"])
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["stats"]["model_id"].endswith("+int8") and report["stats"]["embedded"] == 5, report["stats"]
    again = CliRunner().invoke(main, [*args, "--precision", "int8"])  # nothing lacks under the int8 id
    assert json.loads(again.stdout)["stats"]["embedded"] == 5
