from __future__ import annotations

import pytest

from photodedup.settings import Settings
from photodedup.settings import SettingsError as ValidationError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MODEL_NAME", "DEVICE", "PORT", "PHOTODEDUP_PORT", "PHOTODEDUP_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.model.model_name == "ViT-B-32"
    assert s.model.pretrained == "laion2b_s34b_b79k"
    assert s.model.devices == ["cpu"]
    assert s.server.port == 50051
    assert s.model.weights is None


def test_environment_and_design_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "ViT-B-16")
    monkeypatch.setenv("DEVICE", "cuda:0, cuda:1")
    monkeypatch.setenv("PORT", "6000")
    monkeypatch.setenv("PHOTODEDUP_MAX_BATCH_SIZE", "64")
    s = Settings()
    assert (s.model.model_name, s.model.devices, s.server.port, s.server.max_batch_size) == (
        "ViT-B-16",
        ["cuda:0", "cuda:1"],
        6000,
        64,
    )


def test_prefixed_environment_beats_nothing_and_flags_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTODEDUP_PORT", "7000")
    monkeypatch.setenv("PHOTODEDUP_SERVERS", "a:1,b:2")
    s = Settings.from_flags(port=None, max_queue_delay_ms=None)
    assert s.server.port == 7000 and s.scan.servers == ["a:1", "b:2"]
    s = Settings.from_flags(port=8000, devices=("cpu",))
    assert s.server.port == 8000 and s.model.devices == ["cpu"]


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown device"):
        Settings(devices=["tpu"])
    with pytest.raises(ValidationError):
        Settings(max_batch_size=0)
    assert Settings(devices="cuda").model.devices == ["cuda:0"]


def test_prefixed_names_beat_the_design_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_NAME", "A")
    monkeypatch.setenv("PHOTODEDUP_MODEL_NAME", "B")
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("PHOTODEDUP_PORT", "2")
    monkeypatch.setenv("DEVICES", "cuda:2")  # not a name we read
    s = Settings()
    assert (s.model.model_name, s.server.port, s.model.devices) == ("B", 2, ["cpu"])


def test_sections_take_flat_names_and_replace_validates() -> None:
    s = Settings(max_batch_size=64, near_threshold=7, servers="a:1,b:2")
    assert (s.server.max_batch_size, s.grouping.near_threshold, s.scan.servers) == (64, 7, ["a:1", "b:2"])
    t = s.replace(engine="onnx")
    assert (t.model.engine, s.model.engine, t.server.max_batch_size) == ("onnx", "auto", 64)
    with pytest.raises(ValidationError):
        s.replace(max_batch_size=0)
    with pytest.raises(ValidationError, match="unknown setting"):
        Settings(no_such_field=1)


def test_environment_values_are_validated_like_flags_and_names_ignore_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("photodedup_include_hidden", "true")
    monkeypatch.setenv("PHOTODEDUP_TOKEN", "s3cret")
    monkeypatch.setenv("PHOTODEDUP_SIMILAR_THRESHOLD", "0.05")
    monkeypatch.setenv("PHOTODEDUP_KEEP_POLICY", "camera, resolution")
    monkeypatch.setenv("PHOTODEDUP_CA_CERT", "/etc/ca.pem")
    s = Settings()
    assert s.scan.include_hidden is True
    assert s.transport.token is not None and s.transport.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)
    assert s.grouping.similar_threshold == 0.05 and s.grouping.keep_policy == ["camera", "resolution"]
    assert str(s.transport.ca_cert) == "/etc/ca.pem"
    assert Settings(include_hidden=False).scan.include_hidden is False  # a flag beats the environment
    monkeypatch.setenv("PHOTODEDUP_NEAR_THRESHOLD", "many")
    with pytest.raises(ValidationError, match="near_threshold"):
        Settings()
