"""The integration tests' copy of the project (procs.source_files) works without git, as
from a source tarball, and picks the same files git would."""

import shutil
import subprocess

import pytest

from tests.integration.procs import REPO, source_files


def test_the_copy_leaves_out_what_gitignore_excludes():
    files = source_files()

    assert {"manage.py", "Makefile", "pyproject.toml", "mobilesd/settings.py"} <= set(files)
    assert not [f for f in files if "__pycache__/" in f or f.endswith(".pyc")]
    assert not [f for f in files if f.startswith((".venv/", "data/", ".git/")) or f == ".env"]


def test_the_copy_is_what_git_would_list_in_a_checkout():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (a source tarball): nothing to compare with")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()

    assert sorted(source_files()) == sorted(f for f in listed if (REPO / f).exists())
