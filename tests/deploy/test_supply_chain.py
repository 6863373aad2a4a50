"""Supply chain: dependency floors carry the known security fixes, the image installs its
dependencies from a hashed lock file, its base is pinned by digest and it keeps no installer."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.manifests import DEPLOY, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "build-requirements.lock"
DOCKERFILE = DEPLOY / "Dockerfile"

# The lowest release with the fix, per dependency (direct, or transitive and raised on purpose).
RUNTIME_FLOORS = {
    "aiohttp": "3.13.3",  # request smuggling (3.12.14); decompression/parser DoS (3.13.3)
    "urllib3": "2.6.3",  # via botocore: unbounded decompression (2.6.0), redirects (2.6.3)
    "requests": "2.32.4",  # via azure-core: .netrc credentials sent to the wrong host
    "cryptography": "44.0.1",  # via azure-identity/msal: vulnerable bundled OpenSSL
}
SIM_FLOORS = {
    "flask": "3.1.1",
    "flask-cors": "6.0.0",
    "werkzeug": "3.1.4",
    "jinja2": "3.1.6",
}


def _requirements(items: list[str]) -> dict[str, Requirement]:
    requirements = [Requirement(item) for item in items]
    return {r.name.lower(): r for r in requirements}


def _floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


@pytest.mark.parametrize(
    ("group", "floors"),
    [pytest.param(None, RUNTIME_FLOORS, id="runtime"), pytest.param("sim", SIM_FLOORS, id="sim")],
)
def test_dependency_floors_include_the_security_fixes(group: str | None, floors: dict[str, str]) -> None:
    items = PYPROJECT["project"]["dependencies"] if group is None else PYPROJECT["project"][
        "optional-dependencies"
    ][group]
    declared = _requirements(items)
    for name, fixed in floors.items():
        assert name in declared, f"{name} has no floor in pyproject.toml"
        floor = _floor(declared[name])
        assert floor is not None and floor >= Version(fixed), f"{name}: floor {floor} < {fixed}"


def _locked(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes) of a `--generate-hashes` lock file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    locked: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --hash=")
        name, _, version = spec.strip().partition("==")
        assert version, f"not pinned: {line}"
        locked[name.lower()] = (Version(version.split(";")[0].strip()), options)
    return locked


@pytest.mark.parametrize("path", [LOCK, BUILD_LOCK], ids=["runtime", "build"])
def test_every_locked_package_is_pinned_with_hashes(path: Path) -> None:
    locked = _locked(path)
    assert locked
    for name, (_, hashes) in locked.items():
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in hashes), name


def test_the_lock_satisfies_every_runtime_dependency_and_holds_no_extras() -> None:
    locked = _locked(LOCK)
    for name, requirement in _requirements(PYPROJECT["project"]["dependencies"]).items():
        assert name in locked, f"{name} is not in deploy/requirements.lock (regenerate it)"
        assert locked[name][0] in requirement.specifier, f"{name} {locked[name][0]} not in {requirement}"
    for extra in ("moto", "flask", "pytest", "mypy", "ruff", "bandit", "trustme"):
        assert extra not in locked


def test_the_build_backend_is_locked() -> None:
    backend = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    locked = _locked(BUILD_LOCK)
    for requirement in backend:
        assert locked[requirement.name.lower()][0] in requirement.specifier


def _from_lines() -> list[str]:
    return [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]


def test_base_image_is_pinned_by_digest() -> None:
    images = _from_lines()
    assert len(images) == 2
    for image in images:
        assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image


def test_the_image_installs_dependencies_only_from_the_hashed_lock() -> None:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    installs = [m.group(0) for m in re.finditer(r"pip install[^&\n]*", text)]
    assert installs
    for install in installs:
        # Either hashed requirements from a lock file, or noderescue's own wheel without deps.
        assert ("--require-hashes" in install and "-r " in install) or (
            "--no-deps" in install and "/dist/noderescue-" in install
        ), install
    assert "--no-build-isolation" in text  # the build backend comes from the hashed lock too
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/requirements.lock" in ignore and "!deploy/build-requirements.lock" in ignore
