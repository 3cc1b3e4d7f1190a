"""Check that a wheel folder completes photodedup's dependencies for an offline machine.

Resolves photodedup's requirements (pyproject.toml) and, recursively, those of every wheel found, for
the target Python and Linux x86_64. A requirement is met by a wheel in the folder whose version fits, or
by a package the target machine already has (--preinstalled, name only). Prints what is missing and
exits 1 if anything is.

Usage: check_wheels.py WHEELS_DIR [--python-version 3.12] [--preinstalled torch,torchvision,...]
       check_wheels.py --requirements    (photodedup's requirements to download, one per line)
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# Need torch, which the GPU machine has: downloaded without their dependencies.
TORCH_DEPENDENT = ("open-clip-torch", "timm")
# What the GPU machine brings (torch with its CUDA stack); everything else must come from the folder.
DEFAULT_PREINSTALLED = (
    "torch,torchvision,triton,sympy,mpmath,networkx,jinja2,markupsafe,filelock,fsspec,typing-extensions,"
    "setuptools,cuda-bindings,cuda-pathfinder,cuda-toolkit"
)


def wheel_requirements(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(zf.read(meta).decode("utf-8"))
    return msg.get_all("Requires-Dist") or []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", type=Path, nargs="?")
    ap.add_argument("--requirements", action="store_true", help="print what to download and exit")
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--preinstalled", default=DEFAULT_PREINSTALLED)
    args = ap.parse_args()
    env = {
        "python_version": args.python_version,
        "python_full_version": args.python_version + ".0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    preinstalled = {canonicalize_name(n) for n in args.preinstalled.split(",") if n.strip()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if args.requirements:
        for text in project["dependencies"]:
            name = canonicalize_name(Requirement(text).name)
            if name not in preinstalled and name not in TORCH_DEPENDENT:
                print(text)
        return 0
    if args.wheels is None:
        ap.error("give the wheel folder")
    wheels: dict[str, list[tuple[Version, Path]]] = {}
    for path in sorted(args.wheels.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(path.name)
        wheels.setdefault(canonicalize_name(name), []).append((version, path))
    todo: list[tuple[str, str]] = [("photodedup", r) for r in project["dependencies"]]
    todo += [("build", "setuptools>=69"), ("build", "wheel")]
    seen: set[Path] = set()
    missing: list[str] = []
    while todo:
        parent, text = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        fits = [p for v, p in wheels.get(name, []) if req.specifier.contains(v, prereleases=True)]
        if not fits:
            if name in preinstalled:
                continue
            missing.append(f"{req} (needed by {parent})")
            continue
        path = fits[-1]
        if path not in seen:
            seen.add(path)
            todo += [(path.name, r) for r in wheel_requirements(path)]
    print(f"{len(seen)} wheels used of {sum(len(v) for v in wheels.values())} in {args.wheels}")
    if missing:
        print("missing:\n  " + "\n  ".join(sorted(set(missing))))
        return 1
    print("complete: every requirement is met by a wheel here or by the machine's own packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
