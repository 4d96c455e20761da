"""Validation of server addresses, aliases, user names and models folders."""

import os

from django.conf import settings
from django.core.exceptions import ValidationError

from core_app.text import has_unsafe_characters
from integrations.addresses import url_problem

# "any" asks MobileSD to choose a server for a job, so no server may be called that.
RESERVED_ALIASES = frozenset({"any"})
UNSAFE_CHARACTERS = "It may not contain control characters or bidirectional formatting."


def validate_api_url(value: str) -> None:
    """An http(s) URL with a host that MobileSD may call (`integrations.addresses`):
    loopback and LAN addresses and names are fine (http://gpu-box:7860); credentials,
    link-local, unspecified and metadata addresses and odd IP spellings are not. Host
    names are not resolved here (see `integrations.addresses`)."""
    problem = url_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_url")


def validate_alias(value: str) -> None:
    if value != value.strip() or not value:
        raise ValidationError("An alias may not be blank or start or end with spaces.")
    if "/" in value or "\\" in value:
        raise ValidationError("An alias may not contain '/' or '\\'.")
    if has_unsafe_characters(value):
        raise ValidationError(f"An alias is shown to people. {UNSAFE_CHARACTERS}", "invalid_name")
    if value.lower() in RESERVED_ALIASES:
        raise ValidationError(f"'{value}' is reserved.")


def validate_username(value: str) -> None:
    if has_unsafe_characters(value):
        raise ValidationError(
            f"A user name is shown to people. {UNSAFE_CHARACTERS}", "invalid_name"
        )


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def inside_models_roots(path: str) -> bool:
    """Whether `path`, symlinks resolved, lies inside one of MOBILESD_MODELS_ROOTS (always
    true when none is set)."""
    roots = settings.MOBILESD_MODELS_ROOTS
    real = os.path.realpath(path)
    return not roots or any(_inside(real, os.path.realpath(root)) for root in roots)


def models_dir_problem(value: str) -> str | None:
    """Why `value` is not a models folder MobileSD may write to, or None if it is.

    Its shape is explained (absolute, no `..`, no control characters); everything about the
    host's disk (missing, not a folder, outside `MOBILESD_MODELS_ROOTS`, a symlink that
    leads outside them) is one answer, so that whoever can set the field learns no more
    about the host's folders than that this one is not allowed.
    """
    if has_unsafe_characters(value):
        return "The path may not contain control characters."
    if not os.path.isabs(value):
        return "Use an absolute path, e.g. /mnt/gpu-box/models."
    if ".." in value.replace("\\", "/").split("/"):
        return "The path may not contain '..'."
    if os.path.isdir(value) and inside_models_roots(value):
        return None
    where = (
        " inside the folders MOBILESD_MODELS_ROOTS allows" if settings.MOBILESD_MODELS_ROOTS else ""
    )
    return f"Not an allowed models folder: use an existing folder on the MobileSD host{where}."


def normalise_models_dir(value: str) -> str:
    """The folder as stored: blank, or its path without `.`, doubled or trailing separators."""
    value = value.strip()
    return os.path.normpath(value) if value else ""


def validate_models_dir(value: str) -> None:
    """Blank (no downloads to the server), or a folder `models_dir_problem` allows."""
    problem = models_dir_problem(value) if value else None
    if problem:
        raise ValidationError(problem, code="models_dir_not_allowed")
