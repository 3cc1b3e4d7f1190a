"""Embedders: the local engine, and the remote client's retries, failover and bounded work, against
scripted gRPC servers (deterministic) and a real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from photodedup.client.embedders import LocalEmbedder, RemoteEmbedder
from photodedup.client.embedplan import plan_embedder
from photodedup.settings import Settings
from photodedup.v1 import embed_pb2, embed_pb2_grpc, wire

from helpers import tiny_settings


class ScriptedServer(embed_pb2_grpc.EmbedServiceServicer):
    """Answers with a vector derived from the payload; can refuse each item once or break streams."""

    def __init__(self, model_id: str = "fake@1", refuse_first: bool = False, break_streams: bool = False) -> None:
        self.model_id = model_id
        self.refuse_first = refuse_first
        self.break_streams = break_streams
        self.received = 0
        self.messages: list[int] = []  # images per request message, in arrival order
        self.seen: set[str] = set()
        self.server = grpc.server(ThreadPoolExecutor(4))
        embed_pb2_grpc.add_EmbedServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def GetInfo(self, request: object, context: object) -> embed_pb2.GetInfoResponse:
        return embed_pb2.GetInfoResponse(model_id=self.model_id, input_size=32, embedding_dim=4)

    def EmbedStream(
        self, request_iterator: Iterator[embed_pb2.EmbedStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[embed_pb2.EmbedStreamResponse]:
        for msg in request_iterator:
            self.received += len(msg.items)
            self.messages.append(len(msg.items))
            if self.break_streams:
                context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            results = []
            for item in msg.items:
                data = item.image.encoded
                if self.refuse_first and item.id not in self.seen:
                    self.seen.add(item.id)
                    err = embed_pb2.ItemError(
                        code=wire.code_value(grpc.StatusCode.RESOURCE_EXHAUSTED), message="queue full"
                    )
                    results.append(embed_pb2.EmbedResult(id=item.id, error=err))
                elif data == b"bad":
                    results.append(
                        embed_pb2.EmbedResult(
                            id=item.id,
                            error=embed_pb2.ItemError(
                                code=wire.code_value(grpc.StatusCode.INVALID_ARGUMENT), message="not an image"
                            ),
                        )
                    )
                else:
                    vec = np.array([len(data), 1, 0, 0], dtype="<f2")
                    emb = embed_pb2.Embedding(data=vec.tobytes(), dtype=embed_pb2.DTYPE_FLOAT16, dim=4)
                    results.append(embed_pb2.EmbedResult(id=item.id, embedding=emb))
            yield embed_pb2.EmbedStreamResponse(results=results, model_id=self.model_id)

    def stop(self) -> None:
        self.server.stop(0)


@pytest.fixture
def servers() -> Iterator[list[ScriptedServer]]:
    made: list[ScriptedServer] = []
    yield made
    for s in made:
        s.stop()


def _run(emb: RemoteEmbedder, items: dict[str, bytes]) -> dict[str, object]:
    out = {}
    try:
        for key, data in items.items():
            emb.submit(key, data)
            out.update({o.key: o for o in emb.poll()})
        out.update({o.key: o for o in emb.drain()})
    finally:
        emb.close()
    return out


ITEMS = {f"k{i}": b"x" * (i + 1) for i in range(50)}


def test_resource_exhausted_items_are_retried(servers: list[ScriptedServer]) -> None:
    servers.append(ScriptedServer(refuse_first=True))
    emb = RemoteEmbedder([servers[0].address], "fake@1", 32, max_in_flight=8, batch_size=4, retries=3)
    out = _run(emb, ITEMS)
    assert sorted(out) == sorted(ITEMS)
    for key, data in ITEMS.items():
        assert out[key].error is None
        assert out[key].vector[0] == len(data)
    assert emb.retried == len(ITEMS)


def test_images_submitted_one_by_one_travel_together(servers: list[ScriptedServer]) -> None:
    """A stream lingers for more images before sending a short message (a message per image costs the server
    about twice the CPU per image), and a drain sends what is left at once instead of lingering."""
    servers.append(ScriptedServer())
    emb = RemoteEmbedder([servers[0].address], "fake@1", 32, batch_size=8, linger_s=30.0)
    items = {f"k{i}": b"x" * (i + 1) for i in range(11)}
    started = time.monotonic()
    out = _run(emb, items)
    assert sorted(out) == sorted(items) and all(o.error is None for o in out.values())
    assert servers[0].messages == [8, 3]  # a full message at once, the rest when the scan drains
    assert time.monotonic() - started < 15.0  # neither waited out the 30 s linger


def test_failover_to_a_healthy_server(servers: list[ScriptedServer]) -> None:
    servers += [ScriptedServer(break_streams=True), ScriptedServer()]
    emb = RemoteEmbedder([s.address for s in servers], "fake@1", 32, max_in_flight=16, batch_size=4, retries=3)
    out = _run(emb, ITEMS)
    assert all(o.error is None for o in out.values()) and len(out) == len(ITEMS)
    assert servers[1].received >= len(ITEMS)


def test_all_servers_down_fails_items_as_transient(servers: list[ScriptedServer]) -> None:
    servers.append(ScriptedServer(break_streams=True))
    emb = RemoteEmbedder([servers[0].address], "fake@1", 32, max_in_flight=8, batch_size=4, retries=1)
    out = _run(emb, ITEMS)
    assert len(out) == len(ITEMS)
    assert all(o.vector is None and not o.permanent for o in out.values())


def test_a_refused_image_is_a_permanent_error(servers: list[ScriptedServer]) -> None:
    servers.append(ScriptedServer())
    emb = RemoteEmbedder([servers[0].address], "fake@1", 32)
    out = _run(emb, {"good": b"abc", "bad": b"bad"})
    assert out["good"].error is None
    assert out["bad"].permanent and "not an image" in out["bad"].error


def test_connect_skips_unreachable_and_other_models(servers: list[ScriptedServer], tmp_path: object) -> None:
    servers += [ScriptedServer("m@1"), ScriptedServer("m@2")]
    dead = ScriptedServer()
    dead_address = dead.address
    dead.stop()
    settings = Settings(servers=[dead_address, servers[0].address, servers[1].address], connect_timeout_s=1.0)
    emb = RemoteEmbedder.connect(settings.scan.servers, settings)
    try:
        assert emb.model_id == "m@1" and emb.input_size == 32
        assert [s.address for s in emb.servers] == [servers[0].address]
    finally:
        emb.close()


def test_auto_mode_falls_back_to_local_and_reports_a_missing_model(model_cache: object, tmp_path: object) -> None:
    dead = ScriptedServer()
    address = dead.address
    dead.stop()
    plan = plan_embedder(tiny_settings(model_cache, servers=[address], connect_timeout_s=0.5), "auto")
    assert plan.available and plan.skipped_reason is None and plan.thumb_kind == "array"
    embedder = plan.open()
    assert isinstance(embedder, LocalEmbedder) and embedder.model_id == plan.model_id
    assert embedder.input_size == plan.input_size
    embedder.close()

    missing = Settings(model_name="ViT-B-32", weights=str(tmp_path) + "/no-such-weights.bin")
    plan = plan_embedder(missing, "auto")
    assert not plan.available
    assert plan.skipped_reason.startswith("similar tier skipped: ") and "\n" not in plan.skipped_reason

    plan = plan_embedder(tiny_settings(model_cache, servers=[address], connect_timeout_s=0.5), "remote")
    assert not plan.available and "no embedding server reachable" in plan.skipped_reason


def test_a_remote_plan_asks_getinfo_and_opens_streams_only_when_asked() -> None:
    server = ScriptedServer("m@1")
    try:
        plan = plan_embedder(Settings(servers=[server.address], connect_timeout_s=1.0), "auto")
        assert plan.available and plan.model_id == "m@1" and plan.input_size == 32 and plan.thumb_kind == "jpeg"
        embedder = plan.open()
        assert isinstance(embedder, RemoteEmbedder) and embedder.model_id == "m@1"
        embedder.close()
    finally:
        server.stop()


def test_a_local_plan_is_settled_without_importing_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HUB_CACHE"] = {str(tmp_path / "empty-hub")!r}
        from photodedup.client.embedplan import plan_embedder
        from photodedup.settings import Settings
        offline = plan_embedder(Settings(), "auto")
        tiny = plan_embedder(Settings(model_name="photodedup-tiny", weights="random"), "auto")
        print("OFFLINE", offline.available, offline.skipped_reason)
        print("TINY", tiny.available, tiny.model_id, tiny.input_size)
        print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "OFFLINE False similar tier skipped: cannot load ViT-B-32 weights" in out and "--weights FILE" in out
    assert "TINY True photodedup-tiny@random-seed" in out and out.strip().splitlines()[1].endswith(" 224")
    assert "IMPORTED []" in out


def test_a_missing_local_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)  # find_spec answers None, as when not installed
    plan = plan_embedder(Settings(model_name="photodedup-tiny", weights="random"), "local")
    assert not plan.available
    assert plan.skipped_reason == (
        "similar tier skipped: the in-process engine needs open_clip, which is not installed: "
        "pip install 'photodedup[local]'"
    )


class SilentServer(ScriptedServer):
    """Takes the images and never answers (a wedged server)."""

    def EmbedStream(
        self, request_iterator: Iterator[embed_pb2.EmbedStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[embed_pb2.EmbedStreamResponse]:
        for msg in request_iterator:
            self.received += len(msg.items)
            self.messages.append(len(msg.items))
        while context.is_active():
            time.sleep(0.05)
        return iter(())


def test_a_server_that_never_answers_is_given_up_on(servers: list[ScriptedServer]) -> None:
    servers += [SilentServer(), ScriptedServer()]
    emb = RemoteEmbedder(
        [s.address for s in servers], "fake@1", 32, max_in_flight=8, batch_size=4, retries=1, timeout_s=1.0
    )
    out = _run(emb, ITEMS)
    assert len(out) == len(ITEMS) and all(o.error is None for o in out.values())
    assert servers[0].received > 0  # it was tried, and its images were answered by the other server
