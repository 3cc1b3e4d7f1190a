"""Turn thumbnails into embeddings: in-process (LocalEmbedder) or over gRPC (RemoteEmbedder).

Both take work with `submit(key, thumbnail)` (which blocks when too much is in flight), hand back
finished outcomes with `poll()`, and wait for the rest with `drain()`. Which one a scan uses, and
whether any, is settled by `embedplan.plan_embedder` before hashing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from photodedup.errors import PhotodedupError

if TYPE_CHECKING:
    import numpy as np

    from photodedup.client.hashing import ThumbKind
    from photodedup.settings import Settings

log = logging.getLogger(__name__)

Mode = Literal["auto", "local", "remote", "none"]


@dataclass(frozen=True)
class EmbedOutcome:
    """One image's result. `permanent` errors (the model refused the image) are worth remembering;
    transient ones (no server answered) are not, so the next scan tries again."""

    key: str
    vector: np.ndarray | None
    error: str | None = None
    permanent: bool = True


class Embedder(Protocol):
    model_id: str
    input_size: int
    thumb_kind: ThumbKind
    description: str

    def submit(self, key: str, thumb: np.ndarray | bytes) -> None: ...
    def poll(self) -> list[EmbedOutcome]: ...
    def drain(self) -> Iterator[EmbedOutcome]: ...
    def close(self) -> None: ...


class LocalEmbedder:
    """An in-process engine; batches thumbnails and runs inference on the calling thread."""

    thumb_kind: ThumbKind = "array"

    def __init__(self, engine: object, batch_size: int = 32) -> None:
        self.engine = engine
        info = engine.info  # type: ignore[attr-defined]
        self.model_id: str = info.model_id
        self.input_size: int = info.preprocessing.input_size
        self.batch_size = batch_size
        self.description = f"local {engine.name} on {engine.device}"  # type: ignore[attr-defined]
        self._batch: list[tuple[str, np.ndarray]] = []
        self._done: list[EmbedOutcome] = []
        self._verified = False

    @classmethod
    def create(cls, settings: Settings) -> LocalEmbedder:
        from photodedup.engines import create_engine

        return cls(create_engine(settings, settings.model.devices[0]), settings.scan.embed_batch_size)

    def submit(self, key: str, thumb: np.ndarray | bytes) -> None:
        import numpy as np  # here, not at import: planning a scan (no embedding to make) needs no numpy

        if not isinstance(thumb, np.ndarray):
            from photodedup.imaging import decode_for_model

            try:
                thumb = decode_for_model(thumb, self.input_size, 1 << 30)
            except PhotodedupError as exc:
                self._done.append(EmbedOutcome(key, None, str(exc)))
                return
        self._batch.append((key, thumb))
        if len(self._batch) >= self.batch_size:
            self._run()

    def _run(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        if not self._verified:
            self._verify_on([a for _, a in batch])
        try:
            vectors = self.engine.infer(self.engine.preprocess([a for _, a in batch]))  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - an engine failure costs this batch, not the scan
            log.warning("local inference failed for %d images: %s", len(batch), exc)
            self._done.extend(EmbedOutcome(k, None, f"inference failed: {exc}", permanent=False) for k, _ in batch)
            return
        import numpy as np

        self._done.extend(EmbedOutcome(k, np.asarray(v, np.float32)) for (k, _), v in zip(batch, vectors, strict=True))

    def _verify_on(self, images: list[np.ndarray]) -> None:
        """A quantised engine checks itself on the first real thumbnails; if it fails it falls back to fp32
        (and the fp32 model id) before any vector leaves. The scan reads `model_id` when it stores vectors."""
        self._verified = True
        verify = getattr(self.engine, "verify", None)
        if verify is None:
            return
        try:
            verify(images)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run must not cost the scan
            log.warning("precision self-check on real thumbnails could not run: %s", exc)
        self.model_id = self.engine.info.model_id  # type: ignore[attr-defined]

    def poll(self) -> list[EmbedOutcome]:
        done, self._done = self._done, []
        return done

    def drain(self) -> Iterator[EmbedOutcome]:
        self._run()
        yield from self.poll()

    def close(self) -> None:
        self.engine.close()  # type: ignore[attr-defined]


@dataclass
class _Item:
    key: str
    data: bytes
    attempts: int = 0
    not_before: float = 0.0


def backoff_s(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with a little jitter so retries from many streams do not arrive together."""
    import random

    return min(cap, base * (2 ** max(0, attempt - 1))) * (0.75 + 0.5 * random.random())


@dataclass
class _ServerState:
    address: str
    down: bool = False
    failures: int = 0
    sent: int = 0
    errors: list[str] = field(default_factory=list)


class RemoteEmbedder:
    """Streams JPEG thumbnails to one or more servers over EmbedStream, one long stream per server.

    All servers pull from one shared work queue, so a faster server takes more and a failed server's
    unanswered images go back on the queue for the others (failover). At most `max_in_flight` images
    are submitted and unanswered. Items refused with RESOURCE_EXHAUSTED or UNAVAILABLE are retried
    with backoff; a stream that breaks is reopened with backoff, and a server that keeps failing is
    given up on. When every server is down, the remaining images fail as transient errors.
    """

    thumb_kind: ThumbKind = "jpeg"

    def __init__(
        self,
        servers: Sequence[str],
        model_id: str,
        input_size: int,
        max_in_flight: int = 256,
        batch_size: int = 32,
        retries: int = 5,
        timeout_s: float = 60.0,
        settings: Settings | None = None,
        linger_s: float = 0.02,
    ) -> None:
        self.model_id = model_id
        self.input_size = input_size
        self.description = f"server{'s' if len(servers) > 1 else ''} {', '.join(servers)}"
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.retries = retries
        self.timeout_s = timeout_s
        if settings is None:
            from photodedup.settings import Settings

            settings = Settings()
        self._settings = settings
        self._cond = threading.Condition()
        self._work: deque[_Item] = deque()
        self._outstanding = 0
        self._closing = False
        self._all_down_reason: str | None = None
        self.retried = 0  # items sent again after RESOURCE_EXHAUSTED/UNAVAILABLE or a broken stream
        self._out: queue.Queue[EmbedOutcome] = queue.Queue()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        from photodedup.transport import is_balanced, open_channel

        # A balanced target (dns:///name, ipv4:a,b) gets several streams on one channel: round robin
        # sends each new stream to the next address.
        self.servers = [
            _ServerState(a)
            for a in servers
            for _ in range(settings.transport.balanced_streams if is_balanced(a) else 1)
        ]
        self._channels = {a: open_channel(a, settings) for a in servers}
        for address, channel in self._channels.items():
            if is_balanced(address):
                _settle(channel, settings.scan.connect_timeout_s)
        self._threads = [
            threading.Thread(target=self._serve, args=(s,), name=f"embed-{s.address}", daemon=True)
            for s in self.servers
        ]
        for t in self._threads:
            t.start()

    @classmethod
    def connect(cls, servers: Sequence[str], settings: Settings) -> RemoteEmbedder:
        """Probe every server; keep the reachable ones that serve the first reachable server's model."""
        from photodedup.transport import probe_server

        probes = [probe_server(a, settings) for a in servers]
        good = [p for p in probes if p.error is None]
        if not good:
            raise PhotodedupError(
                "no embedding server reachable (" + "; ".join(f"{p.address}: {p.error}" for p in probes) + ")"
            )
        first = good[0]
        use = [p for p in good if p.model_id == first.model_id]
        for p in good:
            if p.model_id != first.model_id:
                log.warning("server %s serves %s, not %s; not using it", p.address, p.model_id, first.model_id)
        for p in probes:
            if p.error is not None:
                log.warning("server %s is not reachable (%s); using the others", p.address, p.error)
        return cls(
            [p.address for p in use],
            first.model_id,
            first.input_size,
            max_in_flight=settings.scan.max_in_flight,
            batch_size=settings.scan.embed_batch_size,
            retries=settings.scan.server_retries,
            timeout_s=settings.scan.stream_stall_timeout_s,
            settings=settings,
        )

    # -- caller side ------------------------------------------------------------------------------

    def submit(self, key: str, thumb: np.ndarray | bytes) -> None:
        import numpy as np

        if isinstance(thumb, np.ndarray):
            from photodedup.imaging import encode_jpeg

            thumb = encode_jpeg(thumb, 90)
        self._slots.acquire()
        with self._cond:
            self._outstanding += 1
            if self._all_down_reason is not None:
                self._finish(EmbedOutcome(key, None, self._all_down_reason, permanent=False))
                return
            self._work.append(_Item(key, thumb))
            self._cond.notify_all()

    def poll(self) -> list[EmbedOutcome]:
        out: list[EmbedOutcome] = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def drain(self) -> Iterator[EmbedOutcome]:
        """Yield every remaining outcome; returns when nothing is in flight."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        while True:
            # Checked before waiting: the last answer ends the drain at once, not after another wait.
            with self._cond:
                if self._outstanding == 0 and self._out.empty():
                    return
            try:
                yield self._out.get(timeout=0.1)
            except queue.Empty:
                pass

    def close(self) -> None:
        with self._cond:
            self._closing = True
            if self._all_down_reason is None:
                self._all_down_reason = "the scan stopped"
            while self._work:
                item = self._work.popleft()
                self._finish(EmbedOutcome(item.key, None, "the scan stopped", permanent=False))
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=2.0)
        for channel in self._channels.values():
            channel.close()

    # -- shared queue -----------------------------------------------------------------------------

    def _finish(self, outcome: EmbedOutcome) -> None:
        """Deliver one final outcome; caller holds `_cond`."""
        self._outstanding -= 1
        self._out.put(outcome)
        self._slots.release()
        self._cond.notify_all()

    def _deliver(self, outcome: EmbedOutcome) -> None:
        with self._cond:
            self._finish(outcome)

    def _requeue(self, item: _Item, reason: str) -> None:
        with self._cond:
            item.attempts += 1
            if item.attempts > self.retries:
                self._finish(
                    EmbedOutcome(item.key, None, f"gave up after {item.attempts} tries: {reason}", permanent=False)
                )
                return
            if self._all_down_reason is not None:
                self._finish(EmbedOutcome(item.key, None, self._all_down_reason, permanent=False))
                return
            self.retried += 1
            item.not_before = time.monotonic() + backoff_s(item.attempts)
            self._work.append(item)
            self._cond.notify_all()

    def _take(self, state: _ServerState) -> list[_Item] | None:
        """Up to batch_size due items; [] after a short wait; None when this stream should end.

        Fewer than batch_size wait up to `linger_s` for more (until the scan drains): the hashing pool hands
        its results over a chunk at a time, and images sent one per message cost the server about twice the
        CPU per image, and this client four times, of messages of eight (docs/BENCHMARKS.md)."""
        linger_until: float | None = None
        with self._cond:
            while True:
                if state.down or (self._closing and self._outstanding == 0) or self._all_down_reason is not None:
                    return None
                now = time.monotonic()
                due = [it for it in self._work if it.not_before <= now][: self.batch_size]
                if due:
                    if linger_until is None:
                        linger_until = now + self.linger_s
                    if len(due) < self.batch_size and not self._closing and now < linger_until:
                        self._cond.wait(timeout=linger_until - now)
                        continue
                    for it in due:
                        self._work.remove(it)
                    return due
                wait = min((it.not_before - now for it in self._work), default=0.2)
                if not self._cond.wait(timeout=max(0.005, min(wait, 0.2))):
                    return []

    # -- one thread per server --------------------------------------------------------------------

    def _serve(self, state: _ServerState) -> None:
        """One long stream to one server at a time; reopened with backoff when it breaks."""
        from photodedup.v1 import embed_pb2_grpc

        stub = embed_pb2_grpc.EmbedServiceStub(self._channels[state.address])
        while True:
            with self._cond:
                if (self._closing and self._outstanding == 0) or self._all_down_reason is not None:
                    return
            session = _StreamSession(self, state)
            reason = session.run(stub)
            if session.closed_idle:  # the server's idle timeout: not a failure; reopen when there is work
                self._wait_for_work(state)
                continue
            if reason is None:
                continue
            state.failures += 1
            state.errors.append(reason)
            if state.failures > self.retries:
                log.warning("giving up on server %s after %d failed streams: %s", state.address, state.failures, reason)
                self._server_down(state, reason)
                return
            log.info("stream to %s failed (%s); retrying", state.address, reason)
            time.sleep(backoff_s(state.failures, base=0.2))

    def _wait_for_work(self, state: _ServerState) -> None:
        """Until images wait to be sent (or the scan ends): a stream opened with nothing to send would only
        be closed as idle again."""
        with self._cond:
            while not (self._work or state.down or self._closing or self._all_down_reason is not None):
                self._cond.wait(timeout=0.5)

    def _handle(self, item: _Item, res: object, model_id: str) -> None:
        from photodedup.v1 import wire

        if res.HasField("embedding"):  # type: ignore[attr-defined]
            if model_id and model_id != self.model_id:
                self._deliver(EmbedOutcome(item.key, None, f"server switched model to {model_id}", permanent=False))
                return
            try:
                vector = wire.decode_embedding(res.embedding)  # type: ignore[attr-defined]
            except ValueError as exc:
                self._deliver(EmbedOutcome(item.key, None, f"bad embedding from the server: {exc}", permanent=False))
                return
            self._deliver(EmbedOutcome(item.key, vector))
            return
        err = res.error  # type: ignore[attr-defined]
        if wire.is_retryable(err.code):
            self._requeue(item, err.message)
        else:
            self._deliver(EmbedOutcome(item.key, None, err.message or f"error {wire.status_name(err.code)}"))

    def _server_down(self, state: _ServerState, reason: str) -> None:
        with self._cond:
            state.down = True
            if all(s.down for s in self.servers):
                self._all_down_reason = f"no embedding server left ({reason})"
                while self._work:
                    item = self._work.popleft()
                    self._finish(EmbedOutcome(item.key, None, self._all_down_reason, permanent=False))
            self._cond.notify_all()


def _settle(channel: Any, timeout: float) -> None:
    """Let a balanced channel connect to its addresses before streams start: calls made while only one
    address is ready all go to that one, and a stream stays where it started."""
    import grpc

    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return
    time.sleep(0.3)  # the other addresses of the list connect within this on a working network


class _StreamSession:
    """One EmbedStream call to one server: the request generator, the images sent and not yet answered,
    a watchdog for a server that stops answering, and the reply loop. `run` returns None when the
    stream ended cleanly and a reason when it failed; unanswered images go back on the shared queue."""

    def __init__(self, owner: RemoteEmbedder, state: _ServerState) -> None:
        self._owner = owner
        self._state = state
        self._pending: dict[str, _Item] = {}
        self._lock = threading.Lock()
        self._dead = threading.Event()
        self._stalled = threading.Event()
        self._done_watching = threading.Event()
        self._progress = time.monotonic()
        self.closed_idle = False  # the server ended the stream for sitting idle (see `run`)

    def run(self, stub: Any) -> str | None:
        import grpc

        from photodedup.v1 import wire

        call = stub.EmbedStream(self._requests())
        threading.Thread(
            target=self._watchdog, args=(call,), name=f"embed-watch-{self._state.address}", daemon=True
        ).start()
        try:
            for reply in call:
                self._progress = time.monotonic()
                self._state.failures = 0
                for res in reply.results:
                    with self._lock:
                        item = self._pending.pop(res.id, None)
                    if item is not None:
                        self._owner._handle(item, res, reply.model_id)
        except grpc.RpcError as exc:
            reason = f"{self._state.address}: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
            if wire.closed_as_idle(exc):
                # Nothing was in flight on the server's side: images sent meanwhile were never read, so
                # they go back on the queue without using up a try, and the stream is reopened.
                self.closed_idle = True
                self._requeue_unanswered(reason, count_try=False)
                return None
            if self._stalled.is_set():
                reason = f"{self._state.address}: no answer for {self._owner.timeout_s:g} s"
            self._requeue_unanswered(reason)
            return reason
        finally:
            self._done_watching.set()
        if self._requeue_unanswered("no answer"):  # the server closed the stream without answering these
            return f"{self._state.address}: streams end without answers"
        return None

    def _requests(self) -> Iterator[Any]:
        from photodedup.v1 import embed_pb2

        while True:
            items = self._owner._take(self._state)
            if items is None:
                return
            if not items:
                continue
            with self._lock:
                if self._dead.is_set():
                    for it in items:
                        it.attempts -= 1  # never sent: no try used up
                        self._owner._requeue(it, "stream closed")
                    return
                self._pending.update((it.key, it) for it in items)
            self._state.sent += len(items)
            yield embed_pb2.EmbedStreamRequest(
                items=[embed_pb2.StreamItem(id=it.key, image=embed_pb2.Image(encoded=it.data)) for it in items],
                dtype=embed_pb2.DTYPE_FLOAT16,
            )

    def _watchdog(self, call: Any) -> None:
        """A server that takes images and never answers must not hang the scan."""
        timeout = self._owner.timeout_s
        while not self._done_watching.wait(min(1.0, timeout / 4)):
            with self._lock:
                busy = bool(self._pending)
            if not busy:
                self._progress = time.monotonic()
            elif time.monotonic() - self._progress > timeout:
                self._stalled.set()
                call.cancel()
                return

    def _requeue_unanswered(self, reason: str, count_try: bool = True) -> int:
        with self._lock:
            self._dead.set()
            left = list(self._pending.values())
            self._pending.clear()
        for it in left:
            if not count_try:
                it.attempts -= 1
            self._owner._requeue(it, reason)
        return len(left)
