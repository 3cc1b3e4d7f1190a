"""One settings object for server, client and engines: CLI flags > environment > defaults.

Settings are grouped in sections (`settings.model`, `settings.server`, `settings.scan`, `settings.grouping`,
`settings.imaging`, `settings.transport`) so each room reads only its own part. Environment names stay flat:
`PHOTODEDUP_<FIELD>` (e.g. `PHOTODEDUP_MAX_BATCH_SIZE=64`), plus the original design's `MODEL_NAME`,
`DEVICE` and `PORT`; field names are unique across sections, so a flat flag or keyword names one field.
Lists are comma-separated (`PHOTODEDUP_DEVICES=cuda:0,cuda:1`). Build it once in the CLI entry point with
`Settings.from_flags(...)` and pass it down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args, get_origin

import msgspec
from msgspec import Meta

# Largest gRPC message either side sends or accepts (`photodedup.v1.wire` uses it); here so that loading the
# settings does not import grpc.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
# Which copy is the original: most picture (borders excluded), camera metadata, least generation loss,
# colour, no added borders, oldest, then bytes, format and path. See README ("Which file is kept").
DEFAULT_KEEP_POLICY: tuple[str, ...] = (
    "resolution",
    "camera",
    "quality",
    "colour",
    "borders",
    "oldest",
    "size",
    "format",
    "shortest_path",
)


def _user_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env)
    return Path(base) / "photodedup" if base else Path.home() / fallback / "photodedup"


def default_cache_dir() -> Path:
    """Exported ONNX files and other derived artefacts (XDG cache)."""
    return _user_dir("XDG_CACHE_HOME", ".cache")


def default_db_path() -> Path:
    """The scan index lives with the user's data, not the cache: ignore decisions must survive a cache wipe."""
    return _user_dir("XDG_DATA_HOME", ".local/share") / "index.sqlite3"


# Read from the environment as one comma-separated string (each list field splits it before validation).
CommaList = list[str]


class Secret:
    """A value never shown: repr and str mask it (tokens end up in reprs of settings and in logs)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """A setting's value (flag, keyword or environment variable) is not valid; the message names the field."""


def join_address_lists(parts: list[str]) -> list[str]:
    """Comma-split targets, with `ipv4:10.0.0.1:50051,10.0.0.2:50051` put back together: it is one target
    that gRPC balances over, not two."""
    out: list[str] = []
    for part in parts:
        if out and out[-1].startswith(("ipv4:", "ipv6:")) and (part[:1].isdigit() or part.startswith("[")):
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for item in value:
            out.extend(part.strip() for part in str(item).split(",") if part.strip())
        return out
    return value


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _truth(value: Any) -> Any:
    """Environment spellings of a switch (on/off, yes/no, 1/0, true/false), as flags and variables give them."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    return value


def _custom(kind: type, value: Any) -> Any:
    """msgspec's hook for the types it does not know: paths and secrets."""
    if kind is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
    elif kind is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
    raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")


ENV_PREFIX = "PHOTODEDUP_"


class _Section(msgspec.Struct, kw_only=True):
    """A group of settings; each section reads the flat `PHOTODEDUP_*` environment itself.

    Environment names are matched without regard to case, and a value given as a keyword (a flag) wins.
    Every field is a scalar or a comma-separated list, so a variable's text is validated like a flag's.
    The sections are msgspec structs: validating them costs microseconds and importing msgspec a few
    milliseconds, where pydantic's import and model building cost ~0.1 s of every command's start (an eighth
    of an unchanged rescan). Build one with `build` (which validates); the plain constructor does not.
    """

    # Environment variables a field is read from, in order, where they are not PHOTODEDUP_<NAME>.
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def build(cls, values: dict[str, Any]) -> Self:
        """The section from keyword values, the environment and defaults, validated."""
        environ: dict[str, str] | None = None
        data: dict[str, Any] = {}
        for name, kind in _field_kinds(cls).items():
            if name in values:
                value = values[name]
            else:
                if environ is None:
                    environ = {key.upper(): value for key, value in os.environ.items()}
                var = next((v for v in environment_names(name, cls) if v.upper() in environ), None)
                if var is None:
                    continue
                value = environ[var.upper()]
            if kind == "list":
                value = _split_commas(value)
            elif kind == "bool":
                value = _truth(value)
            data[name] = value
        try:
            return msgspec.convert(data, cls, strict=False, dec_hook=_custom)
        except msgspec.ValidationError as exc:
            raise SettingsError(_readable(str(exc))) from None

    def as_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


def _readable(message: str) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.max_batch_size`" as "max_batch_size: expected `int` >= 1"."""
    text, sep, where = message.rpartition(" - at `$.")
    if not sep:
        return message
    return f"{where.rstrip('`')}: {text[:1].lower()}{text[1:]}"


_FIELDS: dict[type, dict[str, msgspec.structs.FieldInfo]] = {}


def _fields(cls: type[_Section]) -> dict[str, msgspec.structs.FieldInfo]:
    """A section's fields by name (msgspec resolves their annotations on each call: done once here)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = {info.name: info for info in msgspec.structs.fields(cls)}
    return fields


def _unannotated(kind: Any) -> Any:
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind


_KINDS: dict[type, dict[str, str]] = {}


def _field_kinds(cls: type[_Section]) -> dict[str, str]:
    """Each field's name -> "list", "bool" or "" (how text from a flag or variable is read before checking)."""
    kinds = _KINDS.get(cls)
    if kinds is None:
        kinds = {}
        for name, info in _fields(cls).items():
            kind = _unannotated(info.type)
            kinds[name] = "list" if get_origin(kind) is list else "bool" if kind is bool else ""
        _KINDS[cls] = kinds
    return kinds


def environment_names(name: str, section: type[_Section]) -> tuple[str, ...]:
    """The variables a field is read from, in order: its aliases when it has them, else PHOTODEDUP_<NAME>."""
    return section.ALIASES.get(name) or (ENV_PREFIX + name.upper(),)


def field_help(name: str) -> tuple[str, tuple[str, ...], Any]:
    """A field's description, environment names and default (for --help: read here so it never drifts)."""
    section = SECTIONS[FIELD_SECTION[name]]
    info = _fields(section)[name]
    description = ""
    for meta in get_args(info.type)[1:] if get_origin(info.type) is Annotated else ():
        if isinstance(meta, msgspec.Meta) and meta.description:
            description = meta.description
    default = info.default_factory() if info.default_factory is not msgspec.NODEFAULT else info.default
    return description, environment_names(name, section), None if default is msgspec.NODEFAULT else default


class ModelSettings(_Section):
    """Which model, which weights and which engine on which devices."""

    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {
        "model_name": ("PHOTODEDUP_MODEL_NAME", "MODEL_NAME"),
        "devices": ("PHOTODEDUP_DEVICES", "DEVICE"),
    }

    model_name: Annotated[
        str, Meta(description=("open_clip model name (photodedup-tiny: a few-layer ViT for tests and benchmarks)."))
    ] = DEFAULT_MODEL
    pretrained: Annotated[str, Meta(description="open_clip pretrained tag.")] = DEFAULT_PRETRAINED
    weights: Annotated[
        str | None,
        Meta(description=("A local checkpoint file, or 'random' for random-initialised weights (tests, benchmarks).")),
    ] = None
    engine: Annotated[
        str, Meta(description="auto, onnx or torch (auto picks the fastest measured for the device).")
    ] = "auto"
    devices: Annotated[CommaList, Meta(description="Comma-separated devices: cpu, mps, cuda, cuda:N.")] = msgspec.field(
        default_factory=lambda: ["cpu"]
    )
    precision: Annotated[
        Literal["auto", "fp32", "fp16", "int8"],
        Meta(
            description=(
                "auto: fp16 on CUDA; on CPU INT8 when it passes its self-check and pays off "
                "(VNNI or >= 1.5x), else fp32."
            )
        ),
    ] = "auto"
    onnx_providers: Annotated[
        CommaList, Meta(description="ONNX Runtime execution providers to try, in order of preference.")
    ] = msgspec.field(default_factory=lambda: ["tensorrt", "cuda", "cpu"])
    cache_dir: Annotated[Path, Meta(description="Where exported models are cached.")] = msgspec.field(
        default_factory=default_cache_dir
    )
    onnx_model: Annotated[
        Path | None,
        Meta(
            description=(
                "A file written by `photodedup export-onnx` (its .json beside it), served as is "
                "by the ONNX engine: no export, no torch needed (the CPU image)."
            )
        ),
    ] = None
    intra_op_threads: Annotated[int, Meta(ge=0, description="Engine CPU threads; 0 means the runtime's default.")] = 0
    cuda_graphs: Annotated[
        bool,
        Meta(
            description=("PyTorch on CUDA: run each batch-size bucket as a captured CUDA graph (not yet run on a GPU).")
        ),
    ] = True
    gpu_decode: Annotated[
        bool,
        Meta(
            description=(
                "PyTorch on CUDA: decode model-size JPEG thumbnails on the GPU with nvJPEG; "
                "other images decode on the CPU (not yet run on a GPU)."
            )
        ),
    ] = True

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("devices: at least one device is needed")
        for dev in self.devices:
            if not (dev == "cpu" or dev == "mps" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
                raise ValueError(f"devices: unknown device {dev!r}: use cpu, mps, cuda or cuda:N")
        self.devices = ["cuda:0" if d == "cuda" else d for d in self.devices]

    @property
    def weights_is_random(self) -> bool:
        return self.weights == "random"


class ServerSettings(_Section):
    """How the gRPC server listens, batches, bounds its work and drains."""

    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {
        "port": ("PHOTODEDUP_PORT", "PORT"),
    }

    host: Annotated[str, Meta(description="Address to listen on.")] = "[::]"
    port: Annotated[int, Meta(ge=0, le=65535, description="gRPC port; 0 picks a free one.")] = 50051
    metrics_port: Annotated[int, Meta(ge=0, le=65535, description="Prometheus metrics port; 0 picks a free one.")] = (
        9464
    )
    metrics: Annotated[bool, Meta(description="Serve Prometheus metrics.")] = True
    max_batch_size: Annotated[int, Meta(ge=1, le=4096, description="Most images per engine call.")] = 32
    max_queue_delay_ms: Annotated[
        float, Meta(ge=0.0, le=10_000.0, description="How long a partial batch waits for more images.")
    ] = 2.0
    max_queue_size: Annotated[
        int, Meta(ge=1, description="Images queued for the engines before requests are refused.")
    ] = 4096
    max_message_bytes: Annotated[
        int, Meta(ge=1024, description="Largest gRPC message sent or accepted, on both sides of the wire.")
    ] = DEFAULT_MAX_MESSAGE_BYTES
    max_items_per_request: Annotated[int, Meta(ge=1, description="Most images in one request or stream message.")] = (
        1024
    )
    decode_workers: Annotated[int, Meta(ge=0, description="Decode/preprocess threads; 0 means one per core.")] = 0
    grace_period_s: Annotated[float, Meta(ge=0.0, description="Seconds to drain on SIGTERM.")] = 10.0
    max_queue_bytes: Annotated[
        int, Meta(ge=1024, description="Encoded image bytes admitted and not yet answered, server-wide.")
    ] = 256 * 1024 * 1024
    max_inflight_per_connection: Annotated[
        int, Meta(ge=1, description="Images one connection may have admitted and not yet answered.")
    ] = 1024
    max_inflight_per_stream: Annotated[
        int, Meta(ge=1, description="Images one stream may have unanswered; beyond it the server stops reading.")
    ] = 256
    max_request_pixels: Annotated[
        int, Meta(ge=1, description="Decoded pixels one request message may cost; images beyond are refused.")
    ] = 160_000_000
    max_decode_pixels: Annotated[
        int, Meta(ge=1, description="Pixels being decoded at once, server-wide (bounds decode memory).")
    ] = 120_000_000
    max_concurrent_rpcs: Annotated[
        int, Meta(ge=1, description="EmbedService calls open at once; more are refused at once (health never is).")
    ] = 1024
    reserved_queue_share: Annotated[
        float,
        Meta(
            ge=0.0,
            lt=1.0,
            description=(
                "Share of the queue budget (images and bytes) kept for light callers: heavy "
                "callers are refused once only this share is left, so a light caller is still "
                "admitted under a flood."
            ),
        ),
    ] = 0.25
    light_caller_items: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "A caller (connection) with at most this many images in flight, the new ones "
                "included, is light and may use the reserved share of the queue."
            ),
        ),
    ] = 64
    stream_idle_timeout_s: Annotated[
        float, Meta(ge=0, description="End a stream that sends nothing for this long with nothing in flight; 0 never.")
    ] = 300.0
    tls_cert: Annotated[
        Path | None,
        Meta(description=("PEM certificate chain for the gRPC port; with tls_key the server speaks TLS only.")),
    ] = None
    tls_key: Annotated[Path | None, Meta(description="PEM private key of tls_cert.")] = None
    tls_client_ca: Annotated[
        Path | None, Meta(description="Require client certificates signed by this PEM CA bundle (mutual TLS).")
    ] = None
    auth_token_file: Annotated[
        Path | None,
        Meta(
            description=(
                "Bearer tokens EmbedService accepts, one per line; re-read on SIGHUP. Health and reflection stay open."
            )
        ),
    ] = None
    max_connection_idle_s: Annotated[
        float, Meta(ge=0, description="Close a connection with no call open for this long; 0 keeps it.")
    ] = 600.0
    max_connection_age_s: Annotated[
        float,
        Meta(
            ge=0,
            description=(
                "Ask clients to reconnect after this long, so they re-resolve and spread over new servers; 0 never."
            ),
        ),
    ] = 0.0
    max_connection_age_grace_s: Annotated[
        float, Meta(ge=0, description="Calls still open when a connection reaches its age get this long to finish.")
    ] = 30.0

    @property
    def decode_threads(self) -> int:
        return self.decode_workers or max(1, os.cpu_count() or 1)


class ImagingSettings(_Section):
    """Limits on decoding that the server and the scanner share."""

    max_image_pixels: Annotated[
        int, Meta(ge=1, description="Decoded pixels allowed per image; larger is refused as a decompression bomb.")
    ] = 80_000_000


class ScanSettings(_Section):
    """How the scanner walks, hashes, indexes and reaches embedders."""

    servers: Annotated[
        CommaList,
        Meta(
            description=(
                "Embedding servers for remote mode: host:port, dns:///name:port (round robin "
                "over every address), or ipv4:addr:port,addr:port."
            )
        ),
    ] = msgspec.field(default_factory=list)
    db: Annotated[Path, Meta(description="The scan index (SQLite).")] = msgspec.field(default_factory=default_db_path)
    scan_workers: Annotated[
        int, Meta(ge=0, description="Hashing/decoding processes for scan; 0 means one per core.")
    ] = 0
    include_hidden: Annotated[bool, Meta(description="Also walk hidden (dot) and system folders such as @eaDir.")] = (
        False
    )
    thumbnail_quality: Annotated[
        int,
        Meta(
            ge=1, le=100, description="JPEG quality of thumbnails sent to servers: q80 keeps real photos under 15 KB."
        ),
    ] = 80
    max_in_flight: Annotated[
        int, Meta(ge=1, description="Thumbnails sent to servers and not yet answered, per scan.")
    ] = 256
    embed_batch_size: Annotated[
        int, Meta(ge=1, le=1024, description="Images per local inference call or stream message.")
    ] = 32
    server_retries: Annotated[int, Meta(ge=0, description="Retries per image on RESOURCE_EXHAUSTED/UNAVAILABLE.")] = 5
    connect_timeout_s: Annotated[
        float, Meta(gt=0, description="How long auto mode waits for a server to answer GetInfo.")
    ] = 3.0
    stream_stall_timeout_s: Annotated[
        float,
        Meta(gt=0, description=("A server stream with images outstanding and no answer for this long is given up on.")),
    ] = 120.0

    def __post_init__(self) -> None:
        self.servers = join_address_lists(self.servers)


class TransportSettings(_Section):
    """How clients reach servers (TLS, client certificate, bearer token, balancing) and the keepalive pings
    both sides send."""

    tls: Annotated[
        bool, Meta(description="Reach servers over TLS (the system's CA roots unless ca_cert is given).")
    ] = False
    ca_cert: Annotated[
        Path | None, Meta(description="PEM CA bundle that signs the servers' certificates (implies tls).")
    ] = None
    client_cert: Annotated[
        Path | None, Meta(description="PEM client certificate for servers that require mutual TLS.")
    ] = None
    client_key: Annotated[Path | None, Meta(description="PEM private key of client_cert.")] = None
    token: Annotated[Secret | None, Meta(description="Bearer token sent to servers; never logged.")] = None
    balanced_streams: Annotated[
        int,
        Meta(ge=1, description=("Streams per dns:/ipv4: server target; round robin spreads them over its addresses.")),
    ] = 4
    keepalive_time_s: Annotated[
        float,
        Meta(gt=0, description=("Ping a quiet connection after this long (both sides); unanswered pings drop it.")),
    ] = 30.0
    keepalive_timeout_s: Annotated[float, Meta(gt=0, description="How long a keepalive ping may go unanswered.")] = 10.0


class GroupingSettings(_Section):
    """Thresholds and keeper policy (defaults measured on the dev set; see docs/BENCHMARKS.md)."""

    near_threshold: Annotated[
        int, Meta(ge=0, le=128, description="Max Hamming distance of the 128-bit dHash||pHash key for the near tier.")
    ] = 20
    similar_threshold: Annotated[
        Annotated[float, Meta(ge=0.0, le=2.0)] | None,
        Meta(
            description=(
                "Max embedding cosine distance for the similar tier. Unset: the model's calibrated threshold "
                "(ViT-B-32 trained weights: 0.01, Immich's default); a model without one (random weights, the "
                "tiny test model) gets no similar tier."
            )
        ),
    ] = None
    keep_policy: Annotated[
        CommaList,
        Meta(
            description=(
                "Keeper rule order: resolution, camera, quality, colour, borders, oldest, size, format, shortest_path."
            )
        ),
    ] = msgspec.field(default_factory=lambda: list(DEFAULT_KEEP_POLICY))
    ann_threshold: Annotated[
        int,
        Meta(
            ge=2, description=("Files with embeddings above which neighbours come from an ANN index, not exact search.")
        ),
    ] = 20_000
    verify: Annotated[
        bool,
        Meta(
            description=("Confirm loose near candidates (crops, borders, small rotations, overlays) by local features.")
        ),
    ] = True
    candidate_threshold: Annotated[
        int,
        Meta(
            ge=0,
            le=128,
            description=("Max Hamming distance of a loose candidate (full frame vs any window) to verify."),
        ),
    ] = 30
    min_pixels: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "Pictures with fewer content pixels than this join exact-copy groups only "
                "(czkawka-style size floor; 0: off, since weak pictures already need the strict "
                "check)."
            ),
        ),
    ] = 0


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelSettings,
    "server": ServerSettings,
    "imaging": ImagingSettings,
    "scan": ScanSettings,
    "grouping": GroupingSettings,
    "transport": TransportSettings,
}


def _section_of_field() -> dict[str, str]:
    owner: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for name in cls.__struct_fields__:
            if name in owner:
                raise RuntimeError(f"settings field {name!r} is in both {owner[name]} and {section}")
            owner[name] = section
    return owner


FIELD_SECTION = _section_of_field()


class Settings:
    """Every tunable of photodedup, validated once, in sections.

    Flat keywords (`Settings(max_batch_size=64)`) are routed to their section, so flags and tests name a
    field without knowing where it lives; reads always go through the section (`settings.server.port`).
    """

    __slots__ = ("model", "server", "imaging", "scan", "grouping", "transport")
    model: ModelSettings
    server: ServerSettings
    imaging: ImagingSettings
    scan: ScanSettings
    grouping: GroupingSettings
    transport: TransportSettings

    def __init__(self, **flat: Any) -> None:
        nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in flat.items():
            if key in SECTIONS and isinstance(value, _Section):
                nested[key] = value.as_dict()
                continue
            if key in SECTIONS and isinstance(value, dict):
                nested[key].update(value)
                continue
            section = FIELD_SECTION.get(key)
            if section is None:
                raise SettingsError(f"unknown setting {key!r}")
            nested[section][key] = value
        for name, cls in SECTIONS.items():
            setattr(self, name, cls.build(nested[name]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(getattr(self, n) == getattr(other, n) for n in SECTIONS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in SECTIONS) + ")"

    def __getstate__(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in SECTIONS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for n, value in state.items():
            setattr(self, n, value)

    @classmethod
    def from_flags(cls, **flags: Any) -> Settings:
        """Flags given on the command line (not None) override environment and defaults."""
        return cls(**{k: v for k, v in flags.items() if v is not None and v != ()})

    def replace(self, **flat: Any) -> Settings:
        """A copy with some fields changed (flat names), validated like the original."""
        values: dict[str, Any] = {name: getattr(self, name).as_dict() for name in SECTIONS}
        for key, value in flat.items():
            section = FIELD_SECTION.get(key)
            if section is None:
                raise SettingsError(f"unknown setting {key!r}")
            values[section][key] = value
        return Settings(**values)
