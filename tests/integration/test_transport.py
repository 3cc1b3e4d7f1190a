"""TLS, mutual TLS, bearer tokens and round robin, with certificates made in the test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from photodedup.client.embedders import RemoteEmbedder
from photodedup.server.app import EmbedServer
from photodedup.settings import Settings
from photodedup.transport import open_aio_channel, open_channel, split_targets
from photodedup.v1 import wire

from certs import CertAuthority
from helpers import encode, photo, tiny_settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertAuthority(folder / "ca")
    other = CertAuthority(folder / "other", name="someone else")
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client", server=False), "other": other}


async def _started(settings: Settings) -> EmbedServer:
    server = EmbedServer(settings)
    await server.start()
    return server


def _client(**kw: Any) -> Settings:
    return Settings(connect_timeout_s=5, **kw)


async def _health(target: str, settings: Settings) -> int:
    async with open_aio_channel(target, settings) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


@pytest.fixture
async def tls_server(model_cache: Path, pki: dict[str, Any]) -> AsyncIterator[EmbedServer]:
    srv = await _started(tiny_settings(model_cache, tls_cert=pki["server"].cert, tls_key=pki["server"].key))
    yield srv
    await srv.stop(0)


async def test_tls_server_answers_tls_clients_and_refuses_plaintext(
    tls_server: EmbedServer, pki: dict[str, Any]
) -> None:
    target = f"127.0.0.1:{tls_server.port}"
    # Health answers before the model loads: NOT_SERVING over a working TLS connection.
    assert await _health(target, _client(ca_cert=pki["ca"].cert)) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _health(target, _client())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(tls_server: EmbedServer, pki: dict[str, Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _health(f"127.0.0.1:{tls_server.port}", _client(ca_cert=pki["other"].cert))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate(model_cache: Path, pki: dict[str, Any]) -> None:
    s = pki["server"]
    server = await _started(tiny_settings(model_cache, tls_cert=s.cert, tls_key=s.key, tls_client_ca=pki["ca"].cert))
    try:
        target = f"127.0.0.1:{server.port}"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _health(target, _client(ca_cert=pki["ca"].cert))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        wrong = pki["other"].issue("stranger", server=False)
        with pytest.raises(grpc.aio.AioRpcError):
            await _health(target, _client(ca_cert=pki["ca"].cert, client_cert=wrong.cert, client_key=wrong.key))
        c = pki["client"]
        ok = _client(ca_cert=pki["ca"].cert, client_cert=c.cert, client_key=c.key)
        assert await _health(target, ok) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(0)


async def test_bearer_tokens_guard_embed_service_only(
    model_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# fleet tokens\nfirst-secret-token\n\nsecond-secret-token\n")
    server = await _started(tiny_settings(model_cache, auth_token_file=tokens))
    caplog.set_level(logging.DEBUG)
    target = f"127.0.0.1:{server.port}"

    async def info(token: str | None) -> grpc.StatusCode:
        async with open_aio_channel(target, _client(token=token)) as channel:
            try:
                await wire.get_info_async(channel, 5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    try:
        # Open for probes without a token.
        assert await _health(target, _client()) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await info(None) == grpc.StatusCode.UNAUTHENTICATED
        assert await info("wrong-token") == grpc.StatusCode.UNAUTHENTICATED
        # Past authentication: the model is still loading.
        assert await info("second-secret-token") == grpc.StatusCode.UNAVAILABLE
        failures = server.metrics.registry.get_sample_value("photodedup_auth_failures_total")
        assert failures == 2
        refused = server.metrics.registry.get_sample_value(
            "photodedup_requests_total", {"method": "GetInfo", "code": "UNAUTHENTICATED"}
        )
        assert refused == 2
        # Reloaded (SIGHUP calls this): the old token stops working, the new one works.
        tokens.write_text("third-secret-token\n")
        assert server.tokens is not None
        server.tokens.reload()
        assert await info("first-secret-token") == grpc.StatusCode.UNAUTHENTICATED
        assert await info("third-secret-token") == grpc.StatusCode.UNAVAILABLE
        # An unreadable file keeps the tokens in force.
        tokens.unlink()
        server.tokens.reload()
        assert await info("third-secret-token") == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
    assert "secret-token" not in caplog.text


def test_address_lists_are_one_target() -> None:
    assert split_targets(["ipv4:127.0.0.1:1,127.0.0.1:2", "a:3,b:4"]) == ["ipv4:127.0.0.1:1,127.0.0.1:2", "a:3", "b:4"]
    assert Settings(servers="dns:///fleet:50051,ipv4:10.0.0.1:1,10.0.0.2:1").scan.servers == [
        "dns:///fleet:50051",
        "ipv4:10.0.0.1:1,10.0.0.2:1",
    ]


def test_two_servers_behind_one_target_both_receive_work(model_cache: Path) -> None:
    from helpers import ServerThread

    threads = [ServerThread(tiny_settings(model_cache)).start() for _ in range(2)]
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{t.server.port}" for t in threads)
        settings = tiny_settings(model_cache, servers=[target], balanced_streams=4, embed_batch_size=2)
        embedder = RemoteEmbedder.connect(settings.scan.servers, settings)
        try:
            for i in range(48):
                embedder.submit(f"k{i}", encode(photo(i % 5, (64, 64))))
            outcomes = list(embedder.drain())
        finally:
            embedder.close()
        assert len(outcomes) == 48 and all(o.vector is not None for o in outcomes)
        assert all(np.isfinite(o.vector).all() for o in outcomes if o.vector is not None)
        served = [
            t.server.metrics.registry.get_sample_value("photodedup_items_total", {"status": "OK"}) or 0 for t in threads
        ]
        assert sum(served) == 48 and min(served) > 0, served
    finally:
        for t in threads:
            t.stop()


def test_cli_info_over_tls_with_a_token(model_cache: Path, tmp_path: Path, pki: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from photodedup.cli import main

    from helpers import ServerThread

    tokens = tmp_path / "tokens"
    tokens.write_text("cli-secret\n")
    s = pki["server"]
    st = ServerThread(tiny_settings(model_cache, tls_cert=s.cert, tls_key=s.key, auth_token_file=tokens)).start()
    try:
        address = f"127.0.0.1:{st.server.port}"
        runner = CliRunner()
        ok = runner.invoke(
            main,
            ["info", "--server", address, "--ca-cert", str(pki["ca"].cert)],
            env={"PHOTODEDUP_TOKEN": "cli-secret"},
        )
        assert ok.exit_code == 0, ok.output
        assert '"modelId"' in ok.output or '"model_id"' in ok.output
        bad = runner.invoke(main, ["info", "--server", address, "--ca-cert", str(pki["ca"].cert), "--token", "nope"])
        assert bad.exit_code == 2 and "UNAUTHENTICATED" in bad.output and "nope" not in bad.output
        with open_channel(address, _client(ca_cert=pki["ca"].cert)) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=wire.SERVICE_NAME), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        st.stop()


def test_missing_certificate_files_are_one_line(tmp_path: Path) -> None:
    from photodedup.errors import PhotodedupError
    from photodedup.server.transport import server_credentials

    with pytest.raises(PhotodedupError, match="needs both"):
        server_credentials(Settings(tls_cert=tmp_path / "c.pem"))
    with pytest.raises(PhotodedupError, match="cannot read the TLS key"):
        server_credentials(Settings(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem"))
