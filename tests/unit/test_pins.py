"""The test set is pinned: a fresh venv installs exactly what this suite was run with.

A fresh venv once resolved pytest 9.2, whose nodes lack what schemathesis's plugin reads, and the suite
went red for a newcomer while older machines stayed green. `scripts/test` installs with the lock as
constraints; these tests keep the lock, pyproject.toml and the running interpreter in agreement.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "test.lock"


def _lock_pins() -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for line in LOCK.read_text().splitlines():
        if line[:1].isalnum():
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _lock_pins()
    for req in _project_requirements():
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is missing from {LOCK.name}: regenerate it (see README)"
        (spec,) = pin.specifier
        assert spec.operator == "==", f"{pin} is not an exact pin"
        assert spec.version in req.specifier, f"lock pins {pin}, outside pyproject's {req}"


def test_runtime_dependencies_have_upper_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{req} has no upper bound"


def test_the_running_interpreter_has_the_pinned_versions() -> None:
    """What this suite runs with is what the lock says (scripts/test installs with `-c requirements/test.lock`)."""
    wrong = []
    for name, pin in _lock_pins().items():
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            wrong.append(f"{name}: not installed (lock: {pin.specifier})")
            continue
        if installed not in pin.specifier:
            wrong.append(f"{name}: {installed} installed, lock says {pin.specifier}")
    assert not wrong, "\n".join(wrong)


def test_pytest_is_one_schemathesis_works_with() -> None:
    pytest_version = _lock_pins()["pytest"].specifier
    assert re.fullmatch(r"==9\.0\.\d+|==8\.\d+\.\d+", str(pytest_version)), pytest_version


def test_scripts_test_installs_with_the_lock() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert "-c requirements/test.lock" in script
