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
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

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


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


# Read from the environment as one comma-separated string (each list field splits it in a validator).
CommaList = Annotated[list[str], "comma-separated"]


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


ENV_PREFIX = "PHOTODEDUP_"


def environment_names(name: str, field: Any) -> tuple[str, ...]:
    """The variables a field is read from, in order: its aliases when it has them, else PHOTODEDUP_<NAME>."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    if isinstance(alias, str):
        return (alias,)
    return (ENV_PREFIX + name.upper(),)


class _Section(BaseModel):
    """A group of settings; each section reads the flat `PHOTODEDUP_*` environment itself.

    Environment names are matched without regard to case, and a value given as a keyword (a flag) wins.
    Every field is a scalar or a comma-separated list, so a variable's text is validated like a flag's.
    This small reader stands in for pydantic-settings, whose import cost 0.2 s of every command (a fifth of
    an unchanged rescan) for features these settings do not use (dotenv, secrets folders, JSON values).
    """

    model_config = ConfigDict(populate_by_name=True, extra="ignore", validate_default=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        environ = {key.upper(): value for key, value in os.environ.items()}
        out = dict(data)
        for name, field in cls.model_fields.items():
            names = environment_names(name, field)
            if name in data or any(n in data for n in names):
                continue
            for var in names:
                if var.upper() in environ:
                    out[name] = environ[var.upper()]
                    break
        return out


class ModelSettings(_Section):
    """Which model, which weights and which engine on which devices."""

    model_name: str = Field(
        DEFAULT_MODEL,
        validation_alias=_alias("PHOTODEDUP_MODEL_NAME", "MODEL_NAME"),
        description="open_clip model name (photodedup-tiny: a few-layer ViT for tests and benchmarks).",
    )
    pretrained: str = Field(DEFAULT_PRETRAINED, description="open_clip pretrained tag.")
    weights: str | None = Field(
        None, description="A local checkpoint file, or 'random' for random-initialised weights (tests, benchmarks)."
    )
    engine: str = Field("auto", description="auto, onnx or torch (auto picks the fastest measured for the device).")
    devices: CommaList = Field(
        default_factory=lambda: ["cpu"],
        validation_alias=_alias("PHOTODEDUP_DEVICES", "DEVICE"),
        description="Comma-separated devices: cpu, mps, cuda, cuda:N.",
    )
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto",
        description=(
            "auto: fp16 on CUDA; on CPU INT8 when it passes its self-check and pays off (VNNI or >= 1.5x), else fp32."
        ),
    )
    onnx_providers: CommaList = Field(
        default_factory=lambda: ["tensorrt", "cuda", "cpu"],
        description="ONNX Runtime execution providers to try, in order of preference.",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Where exported models are cached.")
    onnx_model: Path | None = Field(
        None,
        description="A file written by `photodedup export-onnx` (its .json beside it), served as is by the ONNX "
        "engine: no export, no torch needed (the CPU image).",
    )
    intra_op_threads: int = Field(0, ge=0, description="Engine CPU threads; 0 means the runtime's default.")
    cuda_graphs: bool = Field(
        True,
        description="PyTorch on CUDA: run each batch-size bucket as a captured CUDA graph (not yet run on a GPU).",
    )
    gpu_decode: bool = Field(
        True,
        description="PyTorch on CUDA: decode model-size JPEG thumbnails on the GPU with nvJPEG; other images "
        "decode on the CPU (not yet run on a GPU).",
    )

    @field_validator("devices", "onnx_providers", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one device is needed")
        for dev in value:
            if not (dev == "cpu" or dev == "mps" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
                raise ValueError(f"unknown device {dev!r}: use cpu, mps, cuda or cuda:N")
        return ["cuda:0" if d == "cuda" else d for d in value]

    @property
    def weights_is_random(self) -> bool:
        return self.weights == "random"


class ServerSettings(_Section):
    """How the gRPC server listens, batches, bounds its work and drains."""

    host: str = Field("[::]", description="Address to listen on.")
    port: int = Field(
        50051,
        ge=0,
        le=65535,
        validation_alias=_alias("PHOTODEDUP_PORT", "PORT"),
        description="gRPC port; 0 picks a free one.",
    )
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus metrics port; 0 picks a free one.")
    metrics: bool = Field(True, description="Serve Prometheus metrics.")
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most images per engine call.")
    max_queue_delay_ms: float = Field(
        2.0, ge=0.0, le=10_000.0, description="How long a partial batch waits for more images."
    )
    max_queue_size: int = Field(4096, ge=1, description="Images queued for the engines before requests are refused.")
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        description="Largest gRPC message sent or accepted, on both sides of the wire.",
    )
    max_items_per_request: int = Field(1024, ge=1, description="Most images in one request or stream message.")
    decode_workers: int = Field(0, ge=0, description="Decode/preprocess threads; 0 means one per core.")
    grace_period_s: float = Field(10.0, ge=0.0, description="Seconds to drain on SIGTERM.")
    max_queue_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Encoded image bytes admitted and not yet answered, server-wide."
    )
    max_inflight_per_connection: int = Field(
        1024, ge=1, description="Images one connection may have admitted and not yet answered."
    )
    max_inflight_per_stream: int = Field(
        256, ge=1, description="Images one stream may have unanswered; beyond it the server stops reading."
    )
    max_request_pixels: int = Field(
        160_000_000, ge=1, description="Decoded pixels one request message may cost; images beyond are refused."
    )
    max_decode_pixels: int = Field(
        120_000_000, ge=1, description="Pixels being decoded at once, server-wide (bounds decode memory)."
    )
    max_concurrent_rpcs: int = Field(
        1024, ge=1, description="EmbedService calls open at once; more are refused at once (health never is)."
    )
    reserved_queue_share: float = Field(
        0.25,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of the queue budget (images and bytes) kept for light callers: heavy callers are refused "
            "once only this share is left, so a light caller is still admitted under a flood."
        ),
    )
    light_caller_items: int = Field(
        64,
        ge=0,
        description=(
            "A caller (connection) with at most this many images in flight, the new ones included, is light "
            "and may use the reserved share of the queue."
        ),
    )
    stream_idle_timeout_s: float = Field(
        300.0, ge=0, description="End a stream that sends nothing for this long with nothing in flight; 0 never."
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain for the gRPC port; with tls_key the server speaks TLS only."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="Require client certificates signed by this PEM CA bundle (mutual TLS)."
    )
    auth_token_file: Path | None = Field(
        None,
        description=(
            "Bearer tokens EmbedService accepts, one per line; re-read on SIGHUP. Health and reflection stay open."
        ),
    )
    max_connection_idle_s: float = Field(
        600.0, ge=0, description="Close a connection with no call open for this long; 0 keeps it."
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description=(
            "Ask clients to reconnect after this long, so they re-resolve and spread over new servers; 0 never."
        ),
    )
    max_connection_age_grace_s: float = Field(
        30.0, ge=0, description="Calls still open when a connection reaches its age get this long to finish."
    )

    @property
    def decode_threads(self) -> int:
        return self.decode_workers or max(1, os.cpu_count() or 1)


class ImagingSettings(_Section):
    """Limits on decoding that the server and the scanner share."""

    max_image_pixels: int = Field(
        80_000_000, ge=1, description="Decoded pixels allowed per image; larger is refused as a decompression bomb."
    )


class ScanSettings(_Section):
    """How the scanner walks, hashes, indexes and reaches embedders."""

    servers: CommaList = Field(
        default_factory=list,
        description="Embedding servers for remote mode: host:port, dns:///name:port (round robin over every "
        "address), or ipv4:addr:port,addr:port.",
    )
    db: Path = Field(default_factory=default_db_path, description="The scan index (SQLite).")
    scan_workers: int = Field(0, ge=0, description="Hashing/decoding processes for scan; 0 means one per core.")
    include_hidden: bool = Field(False, description="Also walk hidden (dot) and system folders such as @eaDir.")
    thumbnail_quality: int = Field(
        80, ge=1, le=100, description="JPEG quality of thumbnails sent to servers: q80 keeps real photos under 15 KB."
    )
    max_in_flight: int = Field(256, ge=1, description="Thumbnails sent to servers and not yet answered, per scan.")
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Images per local inference call or stream message.")
    server_retries: int = Field(5, ge=0, description="Retries per image on RESOURCE_EXHAUSTED/UNAVAILABLE.")
    connect_timeout_s: float = Field(3.0, gt=0, description="How long auto mode waits for a server to answer GetInfo.")
    stream_stall_timeout_s: float = Field(
        120.0, gt=0, description="A server stream with images outstanding and no answer for this long is given up on."
    )

    @field_validator("servers", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("servers")
    @classmethod
    def _address_lists(cls, value: list[str]) -> list[str]:
        return join_address_lists(value)


class TransportSettings(_Section):
    """How clients reach servers (TLS, client certificate, bearer token, balancing) and the keepalive pings
    both sides send."""

    tls: bool = Field(False, description="Reach servers over TLS (the system's CA roots unless ca_cert is given).")
    ca_cert: Path | None = Field(None, description="PEM CA bundle that signs the servers' certificates (implies tls).")
    client_cert: Path | None = Field(None, description="PEM client certificate for servers that require mutual TLS.")
    client_key: Path | None = Field(None, description="PEM private key of client_cert.")
    token: SecretStr | None = Field(None, description="Bearer token sent to servers; never logged.")
    balanced_streams: int = Field(
        4, ge=1, description="Streams per dns:/ipv4: server target; round robin spreads them over its addresses."
    )
    keepalive_time_s: float = Field(
        30.0, gt=0, description="Ping a quiet connection after this long (both sides); unanswered pings drop it."
    )
    keepalive_timeout_s: float = Field(10.0, gt=0, description="How long a keepalive ping may go unanswered.")


class GroupingSettings(_Section):
    """Thresholds and keeper policy (defaults measured on the dev set; see docs/BENCHMARKS.md)."""

    near_threshold: int = Field(
        20, ge=0, le=128, description="Max Hamming distance of the 128-bit dHash||pHash key for the near tier."
    )
    similar_threshold: float = Field(
        0.01, ge=0.0, le=2.0, description="Max embedding cosine distance for the similar tier (Immich's default)."
    )
    keep_policy: CommaList = Field(
        default_factory=lambda: list(DEFAULT_KEEP_POLICY),
        description=(
            "Keeper rule order: resolution, camera, quality, colour, borders, oldest, size, format, shortest_path."
        ),
    )
    ann_threshold: int = Field(
        20_000,
        ge=2,
        description="Files with embeddings above which neighbours come from an ANN index, not exact search.",
    )
    verify: bool = Field(
        True, description="Confirm loose near candidates (crops, borders, small rotations, overlays) by local features."
    )
    candidate_threshold: int = Field(
        30, ge=0, le=128, description="Max Hamming distance of a loose candidate (full frame vs any window) to verify."
    )
    min_pixels: int = Field(
        0,
        ge=0,
        description=(
            "Pictures with fewer content pixels than this join exact-copy groups only (czkawka-style size floor;"
            " 0: off, since weak pictures already need the strict check)."
        ),
    )

    @field_validator("keep_policy", mode="before")
    @classmethod
    def _commas(cls, value: Any) -> Any:
        return _split_commas(value)


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
        for name in cls.model_fields:
            if name in owner:
                raise RuntimeError(f"settings field {name!r} is in both {owner[name]} and {section}")
            owner[name] = section
    return owner


FIELD_SECTION = _section_of_field()


class Settings(BaseModel):
    """Every tunable of photodedup, validated once, in sections.

    Flat keywords (`Settings(max_batch_size=64)`) are routed to their section, so flags and tests name a
    field without knowing where it lives; reads always go through the section (`settings.server.port`).
    """

    model_config = ConfigDict(frozen=False, extra="forbid", protected_namespaces=())

    model: ModelSettings
    server: ServerSettings
    imaging: ImagingSettings
    scan: ScanSettings
    grouping: GroupingSettings
    transport: TransportSettings

    @model_validator(mode="before")
    @classmethod
    def _route_flat_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nested: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in data.items():
            if key in SECTIONS and isinstance(value, _Section):
                nested[key] = value.model_dump()
                continue
            if key in SECTIONS and isinstance(value, dict):
                nested[key].update(value)
                continue
            section = FIELD_SECTION.get(key)
            if section is None:
                raise ValueError(f"unknown setting {key!r}")
            nested[section][key] = value
        # Each section is built (not validated from a dict) so it also reads its environment variables.
        return {name: SECTIONS[name](**values) for name, values in nested.items()}

    @classmethod
    def from_flags(cls, **flags: Any) -> Settings:
        """Flags given on the command line (not None) override environment and defaults."""
        return cls(**{k: v for k, v in flags.items() if v is not None and v != ()})

    def replace(self, **flat: Any) -> Settings:
        """A copy with some fields changed (flat names), validated like the original."""
        values: dict[str, Any] = {name: getattr(self, name).model_dump() for name in SECTIONS}
        for key, value in flat.items():
            section = FIELD_SECTION.get(key)
            if section is None:
                raise ValueError(f"unknown setting {key!r}")
            values[section][key] = value
        return Settings(**values)
