"""`pip install .` puts one namespace into site-packages: photodedup.*, never bare server/client/engines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_install_is_one_namespace(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    top = sorted(p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info")))
    assert top in (["photodedup"], ["bin", "photodedup"]), top
    code = (
        "import photodedup, photodedup.server.app, photodedup.client, photodedup.engines, "
        "photodedup.v1.embed_pb2 as pb;"
        "import importlib.resources as r;"
        "print(photodedup.__file__); print(pb.__file__);"
        "print((r.files('photodedup') / 'model_configs' / 'photodedup-tiny.json').is_file());"
        "rv = r.files('photodedup.client.review');"
        "print(all((rv / f).is_file() for f in ('templates/group.html', 'static/htmx.min.js', 'static/review.js')))"
    )
    # Run from an empty folder with only the installed copy (plus the venv's dependencies) importable.
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONSAFEPATH": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0].startswith(str(target)) and out[1].startswith(str(target)), out
    assert out[2] == "True"
    assert out[3] == "True", "the review app's templates and static files ship in the wheel"
