"""The deployment files agree with the code they deploy (ports, probes, drain time, commands)."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from photodedup.cli import main
from photodedup.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfiles_match_settings_and_cli() -> None:
    defaults = Settings()
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (ROOT / "docker" / name).read_text()
        assert f"EXPOSE {defaults.server.port} {defaults.server.metrics_port}" in text
        assert 'ENTRYPOINT ["photodedup"]' in text and 'CMD ["serve"]' in text
        for folder in ("photodedup", "client", "server", "engines", "proto"):
            assert f"COPY {folder} {folder}" in text, (name, folder)
    for command in ("serve", "health"):
        assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0


def test_kubernetes_manifest_probes_the_real_service_and_outlasts_the_drain() -> None:
    docs = list(yaml.safe_load_all((ROOT / "docker" / "k8s" / "photodedup.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = Settings(**{k.removeprefix("PHOTODEDUP_").lower(): v for k, v in env.items()})
    assert pod["terminationGracePeriodSeconds"] > settings.server.grace_period_s
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": Settings().server.port, "metrics": Settings().server.metrics_port}
    assert container["readinessProbe"]["grpc"]["service"] == "photodedup.v1.EmbedService"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
