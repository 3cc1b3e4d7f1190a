"""The kind overlay's TLS and token wiring, run for real: certificates from make-secrets.sh, a server started
with the pod's environment, the pod's own readiness probe command, a scanner with its client certificate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from photodedup.settings import FIELD_SECTION

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif("tls_cert" not in FIELD_SECTION, reason="server TLS settings not on this branch yet")
PHOTODEDUP = [sys.executable, "-m", "photodedup"]
SECRET_DIRS = ("/etc/photodedup/tls", "/etc/photodedup/tokens")


def render(target: str) -> dict[str, Any]:
    kubectl = Path(sys.executable).parent / "kubectl"
    out = run([str(kubectl), "kustomize", str(ROOT / "docker" / "k8s" / target)])
    assert out.returncode == 0, out.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out.stdout)}


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed by docker/k8s/overlays/kind/make-secrets.sh")
    out = tmp_path_factory.mktemp("kind-secrets")
    made = run(
        ["bash", str(ROOT / "docker/k8s/overlays/kind/make-secrets.sh"), str(out)], env={**os.environ, "NO_APPLY": "1"}
    )
    assert made.returncode == 0, made.stderr
    return out


def test_kind_pod_serves_mtls_with_tokens_and_its_probe_passes(secrets: Path, model_cache: Path) -> None:
    (container,) = render("overlays/kind-tls")["Deployment/photodedup"]["spec"]["template"]["spec"]["containers"]

    def local(value: str) -> str:  # the Secret volumes' mount paths -> the files make-secrets.sh wrote
        for mount in SECRET_DIRS:
            value = value.replace(mount, str(secrets))
        return value

    env = {e["name"]: local(e["value"]) for e in container["env"]}
    assert env.get("PHOTODEDUP_TLS_CERT") and env.get("PHOTODEDUP_AUTH_TOKEN_FILE")
    proc = subprocess.Popen(
        [
            *PHOTODEDUP,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--model",
            "photodedup-tiny",
            "--weights",
            "random",
            "--cache-dir",
            str(model_cache),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "serving photodedup.v1.EmbedService" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not ready.wait(0.2):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        port = re.search(r"listening on \S+:(\d+)", "".join(lines)).group(1)  # type: ignore[union-attr]
        probe = [local(arg).replace(":50051", f":{port}") for arg in container["readinessProbe"]["exec"]["command"]]
        done = run([*PHOTODEDUP, *probe[1:]])
        assert done.returncode == 0 and "SERVING" in done.stdout, done.stderr
        scanner = [
            "--ca-cert",
            str(secrets / "ca.crt"),
            "--client-cert",
            str(secrets / "client.crt"),
            "--client-key",
            str(secrets / "client.key"),
        ]
        token = (secrets / "tokens").read_text().strip()
        target = ["--server", f"localhost:{port}"]
        info = run([*PHOTODEDUP, "info", *target, *scanner], env={**os.environ, "PHOTODEDUP_TOKEN": token})
        assert info.returncode == 0 and "photodedup-tiny" in info.stdout, info.stderr
        no_token = run([*PHOTODEDUP, "info", *target, *scanner], env={**os.environ, "PHOTODEDUP_TOKEN": ""})
        assert no_token.returncode != 0 and "UNAUTHENTICATED" in no_token.stdout + no_token.stderr
        no_client_cert = run([*PHOTODEDUP, "health", *target, "--ca-cert", str(secrets / "ca.crt")])
        assert no_client_cert.returncode != 0
        assert token not in "".join(lines) + info.stderr + no_token.stderr
    finally:
        proc.terminate()
        proc.wait(60)
