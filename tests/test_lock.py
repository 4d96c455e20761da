"""requirements.lock, what `make install` installs, covers pyproject.toml: every declared
dependency (and the dev and sentry extras, and the build backend) is pinned there with its
hashes, so a dependency added without `make lock` fails here, not on someone's machine."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of every package in the lock file."""
    text = (ROOT / "requirements.lock").read_text()
    locked: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            locked[canonicalize_name(match[1])] = (match[2], hashes)
    return locked


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["dev"],
        *project["project"]["optional-dependencies"]["sentry"],
        *project["build-system"]["requires"],
    ]
    return [Requirement(name) for name in names]


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    locked = _locked()

    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: run `make lock`"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {name}=={version}, outside {requirement}: run `make lock`"
        )


def test_every_locked_package_has_hashes():
    locked = _locked()

    assert len(locked) > len(_declared())  # the dependencies' dependencies too
    assert [name for name, (_, hashes) in locked.items() if not hashes] == []
