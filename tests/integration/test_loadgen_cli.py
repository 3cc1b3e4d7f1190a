"""`photodedup bench` end to end against a real server: the report's structure, and its numbers checked
against the server's own counters (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from photodedup.cli import main

from certs import CertAuthority
from helpers import ServerThread, encode, photo, tiny_settings


def counter(st: ServerThread, name: str, **labels: str) -> float:
    return st.server.metrics.registry.get_sample_value(name, labels) or 0.0


def counters(st: ServerThread) -> dict[str, float]:
    return {
        "ok": counter(st, "photodedup_items_total", status="OK"),
        "items": counter(st, "photodedup_inference_items_total", device="cpu"),
        "executions": counter(st, "photodedup_executions_total", device="cpu"),
    }


def run_bench(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", "bench", *args, "--json"], env=env)
    out = result.stdout
    start = out.find("{")
    report = json.loads(out[start:]) if start >= 0 else {}
    return result.exit_code, report, result.output


@pytest.fixture
def bench_server(model_cache: Path) -> Iterator[ServerThread]:
    st = ServerThread(tiny_settings(model_cache, max_batch_size=8, max_queue_delay_ms=20.0)).start()
    try:
        yield st
    finally:
        st.stop()


def target_args(st: ServerThread) -> list[str]:
    return ["--server", st.address, "--metrics", f"127.0.0.1:{st.server.metrics_port}"]


def test_stream_report_matches_server_counters(bench_server: ServerThread) -> None:
    before = counters(bench_server)
    code, report, output = run_bench(
        *target_args(bench_server),
        *("--mode", "stream", "--concurrency", "1,3", "--items-per-message", "4", "--requests", "6"),
        *("--warmup", "0", "--images", "5", "--photo-size", "320x240"),
    )
    after = counters(bench_server)
    assert code == 0, output
    assert report["meta"]["mode"] == "stream" and report["meta"]["model_id"].startswith("photodedup-tiny@random")
    assert report["meta"]["max_batch_size"] == 8
    assert report["unexpected_errors"] == {}
    steps = report["steps"]
    assert [s["concurrency"] for s in steps] == [1, 3]
    for step in steps:
        assert step["requests"] == 6 and step["images"] == 24 and step["images_ok"] == 24
        assert step["errors"] == {}
        assert set(step["request_latency_ms"]) == {"p50", "p90", "p95", "p99"}
        assert step["image_latency_ms"]["p50"] <= step["image_latency_ms"]["p99"]
        assert step["images_per_s"] > 0
        srv = step["server"]
        assert srv["items_ok"] == 24 and srv["inference_items"] == 24
        assert step["mean_batch"] == pytest.approx(24 / srv["executions"])
        assert step["batch_efficiency"] == pytest.approx(step["mean_batch"] / 8)
        assert 0 < step["bytes_per_image"] < 15 * 1024
        assert step["server_cpu_ms_per_image"] is not None
    # No warm-up: what the steps report is exactly what the server counted.
    assert after["ok"] - before["ok"] == sum(s["images_ok"] for s in steps) == 48
    assert after["items"] - before["items"] == 48
    assert sum(s["server"]["executions"] for s in steps) == after["executions"] - before["executions"]


def test_unary_warmup_is_excluded_from_the_step(bench_server: ServerThread) -> None:
    before = counters(bench_server)
    code, report, output = run_bench(
        *target_args(bench_server),
        *("--mode", "unary", "--concurrency", "2", "--batch", "3", "--requests", "5", "--warmup", "0.3"),
        *("--payload", "raw", "--images", "4", "--photo-size", "300x300"),
    )
    after = counters(bench_server)
    assert code == 0, output
    (step,) = report["steps"]
    assert step["image_latency_ms"] is None  # per image only for streams
    assert step["requests"] == 5 and step["images_ok"] == 15
    assert step["server"]["items_ok"] == 15  # the warm-up images are not in the step...
    assert after["ok"] - before["ok"] > 15  # ...though the server answered them too
    assert step["bytes_per_image"] > 224 * 224 * 3  # raw pixels plus framing


def test_original_payload_from_a_folder_of_photos(bench_server: ServerThread, tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"p{i}.jpg").write_bytes(encode(photo(i, (640, 480)), quality=90))
    (tmp_path / "notes.txt").write_text("not a photo")
    sizes = sorted(len((tmp_path / f"p{i}.jpg").read_bytes()) for i in range(3))
    code, report, output = run_bench(
        *target_args(bench_server),
        *("--payload", "original", "--photos", str(tmp_path), "--concurrency", "1", "--items-per-message", "3"),
        *("--requests", "2", "--warmup", "0"),
    )
    assert code == 0, output
    assert report["meta"]["payload_sources"].startswith("3 photos")
    (step,) = report["steps"]
    assert step["images_ok"] == 6
    assert sizes[0] < step["bytes_per_image"] < sizes[-1] + 200


def test_item_errors_fail_the_run_unless_expected(model_cache: Path) -> None:
    st = ServerThread(tiny_settings(model_cache, max_items_per_request=2)).start()
    try:
        args = [
            *target_args(st),
            *("--concurrency", "1", "--items-per-message", "3", "--requests", "2", "--warmup", "0", "--images", "3"),
        ]
        code, report, _ = run_bench(*args)
        assert code == 1
        # An oversized message ends the stream with one status; its three images are counted lost.
        assert report["steps"][0]["errors"] == {"INVALID_ARGUMENT": 3}
        assert report["unexpected_errors"] == {"INVALID_ARGUMENT": 3}
        code, report, output = run_bench(*args, "--expect-status", "INVALID_ARGUMENT")
        assert code == 0, output
    finally:
        st.stop()


def test_bench_over_tls_with_a_bearer_token(model_cache: Path, tmp_path: Path) -> None:
    """bench reaches a TLS + token server with the scanner's transport options, and is refused without them."""
    ca = CertAuthority(tmp_path / "ca")
    leaf = ca.issue("server")
    tokens = tmp_path / "tokens"
    tokens.write_text("bench-secret-token\n")
    st = ServerThread(tiny_settings(model_cache, tls_cert=leaf.cert, tls_key=leaf.key, auth_token_file=tokens))
    st.start()
    try:
        load = [*target_args(st), "--concurrency", "2", "--items-per-message", "2", "--requests", "3", "--warmup", "0"]
        before = counters(st)
        code, report, output = run_bench(
            *load, "--ca-cert", str(ca.cert), env={"PHOTODEDUP_TOKEN": "bench-secret-token"}
        )
        assert code == 0, output
        (step,) = report["steps"]
        assert step["images_ok"] == 6 and step["errors"] == {}
        assert counters(st)["ok"] - before["ok"] == 6
        assert "bench-secret-token" not in output
        # The token as a flag works the same.
        code, report, output = run_bench(
            *load, "--ca-cert", str(ca.cert), "--token", "bench-secret-token", env={"PHOTODEDUP_TOKEN": None}
        )
        assert code == 0, output
        # No token, a wrong token, or plaintext: one clear error line, no report, the token never shown.
        code, _, output = run_bench(*load, "--ca-cert", str(ca.cert), env={"PHOTODEDUP_TOKEN": None})
        assert code == 2 and "UNAUTHENTICATED" in output, output
        code, _, output = run_bench(*load, "--ca-cert", str(ca.cert), env={"PHOTODEDUP_TOKEN": "wrong-token"})
        assert code == 2 and "UNAUTHENTICATED" in output and "wrong-token" not in output, output
        code, _, output = run_bench(*load, "--timeout", "3", env={"PHOTODEDUP_TOKEN": "bench-secret-token"})
        assert code == 2 and "UNAVAILABLE" in output, output
        assert counters(st)["ok"] - before["ok"] == 12
    finally:
        st.stop()


def test_without_metrics_the_server_columns_are_empty(server_thread: ServerThread) -> None:
    result = CliRunner().invoke(
        main, ["bench", "--server", server_thread.address, "--concurrency", "2", "--requests", "2", "--warmup", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "n/a" in result.output and "--metrics" in result.output


def test_local_engine_only(model_cache: Path) -> None:
    code, report, output = run_bench(
        "--local", "--model", "photodedup-tiny", "--weights", "random", "--cache-dir", str(model_cache),
        "--engine", "onnx", "--batch", "2,4", "--requests", "3", "--warmup", "0",
    )  # fmt: skip
    assert code == 0, output
    assert report["meta"]["mode"] == "local" and report["meta"]["engines"] == ["onnx/cpu/fp32"]
    assert [(s["batch"], s["images_ok"], s["requests"]) for s in report["steps"]] == [(2, 6, 3), (4, 12, 3)]
    assert all(s["server"] is None for s in report["steps"])


def test_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["bench"]).exit_code == 2
    assert runner.invoke(main, ["bench", "--server", "x:1", "--local"]).exit_code == 2
    assert runner.invoke(main, ["bench", "--server", "x:1", "--concurrency", "0"]).exit_code == 2


def test_bench_as_a_subprocess(server_thread: ServerThread) -> None:
    exe = Path(sys.executable).with_name("photodedup")
    proc = subprocess.run(
        [
            str(exe),
            "bench",
            "--server",
            server_thread.address,
            "--concurrency",
            "1",
            "--requests",
            "2",
            "--warmup",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"][0]["images_ok"] == 16
