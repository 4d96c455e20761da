"""The integration tests' copy of the project (procs.source_files) works without git, as
from a source tarball, and picks the same files git would."""

import shutil
import subprocess

import pytest
from django.core.management.base import CommandError
from django.db import OperationalError
from psycopg.errors import DeadlockDetected

from tests.integration import conftest
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


def test_a_flush_that_deadlocked_with_a_worker_is_run_again(monkeypatch):
    calls: list[int] = []

    def flush(case: object) -> None:
        calls.append(1)
        if len(calls) < 3:
            try:
                try:
                    raise DeadlockDetected("deadlock detected")
                except DeadlockDetected as db_error:
                    raise OperationalError("deadlock detected") from db_error
            except OperationalError as exc:
                raise CommandError("Database couldn't be flushed.") from exc

    monkeypatch.setattr(conftest, "_flush", flush)
    conftest._flush_again_after_a_deadlock(object())
    assert len(calls) == 3

    def broken(case: object) -> None:
        raise CommandError("Database couldn't be flushed.")

    monkeypatch.setattr(conftest, "_flush", broken)
    with pytest.raises(CommandError):
        conftest._flush_again_after_a_deadlock(object())
