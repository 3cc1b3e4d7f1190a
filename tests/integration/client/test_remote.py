"""The remote embedder against real servers: parity with the in-process engine, and failover when a
server stops in the middle of a scan."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from photodedup.client.embedders import LocalEmbedder, RemoteEmbedder
from photodedup.imaging import encode_jpeg
from photodedup.settings import Settings

from helpers import ServerThread, photo, tiny_settings


def test_remote_matches_local(server_thread: ServerThread, settings: Settings) -> None:
    thumbs = {f"p{i}": np.asarray(photo(i, (224, 224))) for i in range(6)}
    local = LocalEmbedder.create(settings)
    try:
        for key, arr in thumbs.items():
            local.submit(key, arr)
        want = {o.key: o.vector for o in local.drain()}
    finally:
        local.close()
    remote = RemoteEmbedder.connect([server_thread.address], settings)
    try:
        assert remote.model_id == local.model_id
        for key, arr in thumbs.items():
            remote.submit(key, encode_jpeg(arr, 90))
        got = {o.key: o for o in remote.drain()}
    finally:
        remote.close()
    for key, vec in want.items():
        assert got[key].error is None
        assert float(np.dot(vec, got[key].vector)) > 0.98  # JPEG q90 on the wire costs a little


def test_a_server_stopping_mid_scan_fails_over(model_cache: Path) -> None:
    first = ServerThread(tiny_settings(model_cache)).start()
    second = ServerThread(tiny_settings(model_cache)).start()
    try:
        remote = RemoteEmbedder.connect([first.address, second.address], tiny_settings(model_cache))
        assert len(remote.servers) == 2
        thumb = encode_jpeg(np.asarray(photo(1, (224, 224))), 90)
        outcomes = {}
        stopper: threading.Thread | None = None
        try:
            for i in range(300):
                remote.submit(f"k{i}", thumb)
                if i == 60:
                    stopper = threading.Thread(target=first.stop, kwargs={"grace": 0.0})
                    stopper.start()
                outcomes.update({o.key: o for o in remote.poll()})
            outcomes.update({o.key: o for o in remote.drain()})
        finally:
            remote.close()
            if stopper is not None:
                stopper.join(30)
        assert len(outcomes) == 300
        failed = [o for o in outcomes.values() if o.error is not None]
        assert failed == []
        by_address = {s.address: s.sent for s in remote.servers}
        assert by_address[second.address] > 0
    finally:
        second.stop()


def test_a_stream_closed_as_idle_is_reopened_and_nothing_fails(model_cache: Path) -> None:
    server = ServerThread(tiny_settings(model_cache, stream_idle_timeout_s=0.3)).start()
    try:
        settings = tiny_settings(model_cache, server_retries=1)
        remote = RemoteEmbedder.connect([server.address], settings)
        thumb = encode_jpeg(np.asarray(photo(1, (224, 224))), 90)

        def idle_closes() -> float:
            labels = {"method": "EmbedStream", "code": "UNAVAILABLE"}
            return server.server.metrics.registry.get_sample_value("photodedup_requests_total", labels) or 0.0

        outcomes = {}
        try:
            for round_ in range(3):  # each round: some images, then the stream sits idle until the server ends it
                closes = idle_closes()
                for i in range(4):
                    remote.submit(f"r{round_}.{i}", thumb)
                for _ in range(3000):  # up to a minute on a loaded machine
                    outcomes.update({o.key: o for o in remote.poll()})
                    if len(outcomes) == 4 * (round_ + 1) and idle_closes() > closes:
                        break
                    time.sleep(0.02)
                assert [o.error for o in outcomes.values() if o.error is not None] == []
                assert idle_closes() > closes
                time.sleep(1.0)  # several idle timeouts more: a client that reopened at once is closed again
            outcomes.update({o.key: o for o in remote.drain()})
        finally:
            remote.close()
        assert len(outcomes) == 12
        assert [o for o in outcomes.values() if o.error is not None] == []
        assert [(s.failures, s.errors) for s in remote.servers] == [(0, [])]  # an idle close is no failure
    finally:
        server.stop()
