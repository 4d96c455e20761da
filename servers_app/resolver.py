"""Which of a server's checkpoints (or LoRAs) a user means.

Real servers look a checkpoint name up exactly and, when it is unknown, silently generate
with whatever model is loaded (REFERENCE.md A.2, A.5). MobileSD therefore resolves what a
user sends to the server's exact title first, and says why when it cannot.

Accepted forms, tried in this order (the first form that matches decides):

1. the exact title (`Pony\\x.safetensors [9f90c59f3a]`);
2. the SHA-256 (64 hex) or short hash (10 hex), alone;
3. the relative path, `/` and `\\` in any mix, with or without ` [hash]`, any case, and
   without its extension when none is given (`Pony\\x` for `Pony/x.safetensors`);
4. an absolute path ending in a model's path below the server's model folder;
5. the model name (`Pony_x`) or the bare file name, with or without its extension, when
   only one model has it.

A form that matches several models is an ambiguity (their titles are returned), never a
guess.

LoRAs (`resolve_lora`) are named in a prompt's `<lora:NAME:weight>`, which servers look up
exactly by the `name` of `/sdapi/v1/loras` (the file stem) or its `alias`; a file name, a
path or an alias that is not exactly one of those is silently ignored. Accepted forms, in
this order:

1. the exact name (`add_detail`);
2. the relative path, `/` and `\\` in any mix, with or without its extension, any case
   (`styles/add_detail.safetensors`, `styles\\add_detail`, `add_detail.safetensors`);
3. an absolute path, as for checkpoints;
4. the bare file name, with or without extension, any case, in any folder;
5. the alias (`ss_output_name`), exactly, then in any case.

The same rule about ambiguity holds (the relative paths are returned).
"""

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from servers_app.checkpoints import HASH_SUFFIX, MODEL_EXTENSIONS, checkpoint_key, file_stem

_HEX = re.compile(r"^[0-9a-fA-F]+$")


class ModelLike(Protocol):
    title: str
    model_name: str
    relative_path: str
    filename: str
    short_hash: str
    sha256: str


class LoraLike(ModelLike, Protocol):
    name: str
    alias: str


@dataclass
class Resolution:
    """The outcome: `model` when exactly one matched (with the `rule` that matched), else
    `error` ("not_found" or "ambiguous") with `candidates` (ambiguous matches, or close
    names to suggest)."""

    requested: str
    model: ModelLike | None = None
    rule: str = ""
    error: str = ""
    candidates: list[str] = field(default_factory=list)
    # What the messages call the model.
    noun: str = "Checkpoint"

    @property
    def title(self) -> str | None:
        return self.model.title if self.model is not None else None

    def message(self, server_alias: str) -> str:
        if self.model is not None:
            return f"'{self.requested}' is '{self.model.title}' on server '{server_alias}'."
        if self.error == "ambiguous":
            names = ", ".join(self.candidates)
            return (
                f"{self.noun} '{self.requested}' matches several models on server "
                f"'{server_alias}': {names}. Use the full path."
            )
        hint = f" Did you mean: {', '.join(self.candidates)}?" if self.candidates else ""
        return f"{self.noun} '{self.requested}' was not found on server '{server_alias}'.{hint}"


def _one(
    requested: str, rule: str, matches: Sequence[ModelLike], *, noun: str = "Checkpoint"
) -> Resolution | None:
    unique = list({id(m): m for m in matches}.values())
    if len(unique) == 1:
        return Resolution(requested, model=unique[0], rule=rule, noun=noun)
    if unique:
        label = (lambda m: m.title) if noun == "Checkpoint" else (lambda m: m.relative_path)
        candidates = sorted(label(m) for m in unique)
        return Resolution(requested, error="ambiguous", candidates=candidates, noun=noun)
    return None


def resolve(requested: str, models: Sequence[ModelLike]) -> Resolution:
    """Resolve `requested` among one server's checkpoints (see the module docstring)."""
    wanted = (requested or "").strip()
    if not wanted:
        return Resolution(requested, error="not_found")
    steps = (
        ("title", lambda: [m for m in models if m.title == wanted]),
        ("hash", lambda: _by_hash(wanted, models)),
        ("path", lambda: _by_path(wanted, models)),
        ("absolute_path", lambda: _by_absolute_path(wanted, models)),
        ("name", lambda: _by_name(wanted, models)),
    )
    for rule, find in steps:
        found = _one(wanted, rule, find())
        if found is not None:
            return found
    close = difflib.get_close_matches(
        checkpoint_key(wanted), [checkpoint_key(m.title) for m in models], n=3, cutoff=0.7
    )
    by_key = {checkpoint_key(m.title): m.title for m in models}
    return Resolution(wanted, error="not_found", candidates=[by_key[key] for key in close])


def _by_hash(wanted: str, models: Sequence[ModelLike]) -> list[ModelLike]:
    if not _HEX.match(wanted) or len(wanted) not in (10, 64):
        return []
    value = wanted.lower()
    if len(value) == 64:
        return [m for m in models if m.sha256.lower() == value]
    return [m for m in models if m.short_hash.lower() == value or m.sha256.lower()[:10] == value]


def _by_path(wanted: str, models: Sequence[ModelLike]) -> list[ModelLike]:
    key = checkpoint_key(wanted)
    matches = [m for m in models if checkpoint_key(m.relative_path) == key]
    if not matches and "/" in key and _without_extension(key) == key:
        # A folder path written without the file's extension: `Pony\\x` for `Pony/x.ckpt`.
        matches = [m for m in models if _without_extension(checkpoint_key(m.relative_path)) == key]
    suffix = HASH_SUFFIX.search(wanted)
    if len(matches) > 1 and suffix:
        # A hash beside an ambiguous name picks among them.
        given = suffix.group(1).lower()
        hashed = [m for m in matches if given in (m.short_hash.lower(), m.sha256.lower())]
        return hashed or matches
    return matches


def _by_absolute_path(wanted: str, models: Sequence[ModelLike]) -> list[ModelLike]:
    path = wanted.replace("\\", "/")
    if not (path.startswith("/") or re.match(r"^[A-Za-z]:/", path)):
        return []
    full = checkpoint_key(path)
    exact = [m for m in models if m.filename and checkpoint_key(m.filename) == full]
    if exact:
        return exact
    # The same folder mounted elsewhere: the longest relative path the input ends with.
    ends = [m for m in models if full.endswith("/" + checkpoint_key(m.relative_path))]
    if not ends:
        return []
    longest = max(len(checkpoint_key(m.relative_path)) for m in ends)
    return [m for m in ends if len(checkpoint_key(m.relative_path)) == longest]


def _by_name(wanted: str, models: Sequence[ModelLike]) -> list[ModelLike]:
    bare = HASH_SUFFIX.sub("", wanted).strip()
    if "/" in bare.replace("\\", "/"):
        return []
    name = file_stem(bare).casefold()
    return [
        m
        for m in models
        if file_stem(m.relative_path).casefold() == name or m.model_name.casefold() == name
    ]


def resolve_lora(requested: str, models: Sequence[LoraLike]) -> Resolution:
    """Resolve `requested` among one server's LoRAs (see the module docstring); the
    model's `name` is what goes in `<lora:NAME:weight>`."""
    noun = "LoRA"
    wanted = (requested or "").strip()
    if not wanted:
        return Resolution(requested, error="not_found", noun=noun)
    folded = wanted.casefold()
    steps: tuple[tuple[str, Callable[[], Sequence[ModelLike]]], ...] = (
        ("name", lambda: [m for m in models if m.name == wanted]),
        ("path", lambda: _lora_by_path(wanted, models)),
        ("absolute_path", lambda: _by_absolute_path(wanted, models)),
        ("file_name", lambda: _by_name(wanted, models)),
        ("alias", lambda: [m for m in models if m.alias == wanted]),
        ("alias", lambda: [m for m in models if m.alias.casefold() == folded]),
    )
    for rule, find in steps:
        found = _one(wanted, rule, find(), noun=noun)
        if found is not None:
            return found
    spellings: dict[str, str] = {}
    for model in models:
        for spelling in (model.alias, model.name):
            if spelling:
                spellings.setdefault(file_stem(spelling).casefold(), model.name)
    close = difflib.get_close_matches(file_stem(wanted).casefold(), list(spellings), cutoff=0.7)
    suggestions = list(dict.fromkeys(spellings[key] for key in close))
    return Resolution(wanted, error="not_found", candidates=suggestions, noun=noun)


def lora_key(requested: str) -> str:
    """A server-independent key of a LoRA as written: its file stem, case folded. Every
    form `resolve_lora` accepts has the LoRA's stem or its alias as this key, so a server
    whose cache has no LoRA with this stem (CachedModel.stem_key) or alias cannot have it."""
    return file_stem(HASH_SUFFIX.sub("", requested.strip())).casefold()


def _without_extension(key: str) -> str:
    for extension in MODEL_EXTENSIONS:
        if key.endswith(extension):
            return key[: -len(extension)]
    return key


def _lora_by_path(wanted: str, models: Sequence[ModelLike]) -> list[ModelLike]:
    key = _without_extension(checkpoint_key(wanted))
    return [m for m in models if _without_extension(checkpoint_key(m.relative_path)) == key]
