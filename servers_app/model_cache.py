"""Turning a server's sd-models and loras listings into cache rows."""

import re
from dataclasses import dataclass, field
from typing import Any

from servers_app.checkpoints import checkpoint_key, file_stem, strip_hash
from servers_app.models import ModelKind

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LORA_FOLDERS = ("/models/lora/", "/models/lycoris/")


@dataclass(frozen=True)
class ModelRow:
    """One listed model, in the CachedModel fields (`fields()`)."""

    kind: str
    title: str
    name: str
    relative_path: str
    model_name: str = ""
    filename: str = ""
    short_hash: str = ""
    sha256: str = ""
    config: str = ""
    alias: str = ""
    base_model: str = ""
    trigger_words: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    requirement_key: str = ""

    def fields(self) -> dict[str, Any]:
        key = checkpoint_key(self.relative_path)
        return {
            "kind": self.kind,
            "title": self.title,
            "name": self.name,
            "model_name": self.model_name,
            "relative_path": self.relative_path,
            "filename": self.filename,
            "short_hash": self.short_hash,
            "sha256": self.sha256,
            "config": self.config,
            "alias": self.alias,
            "base_model": self.base_model,
            "trigger_words": self.trigger_words,
            "metadata": self.metadata,
            "lookup_key": key,
            "stem_key": file_stem(self.relative_path).casefold(),
            "identity": self.sha256.lower() if self.sha256 else f"path:{key}",
            "requirement_key": self.requirement_key,
        }


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _hex(value: Any, length: int) -> str:
    text = _text(value).lower()
    return text if len(text) == length and _HEX.match(text) else ""


def checkpoint_rows(listing: list[dict[str, Any]]) -> list[ModelRow]:
    """Rows of `/sdapi/v1/sd-models`: the relative path is the title without its hash."""
    rows = []
    for item in listing:
        title = _text(item.get("title"))
        if not title:
            continue
        relative = strip_hash(title)
        rows.append(
            ModelRow(
                kind=ModelKind.CHECKPOINT,
                title=title,
                name=file_stem(relative),
                relative_path=relative,
                model_name=_text(item.get("model_name")),
                filename=_text(item.get("filename")),
                short_hash=_hex(item.get("hash"), 10),
                sha256=_hex(item.get("sha256"), 64),
                config=_text(item.get("config")),
            )
        )
    return rows


def trigger_words(metadata: dict[str, Any], limit: int = 10) -> list[str]:
    """The most frequent training tags (kohya `ss_tag_frequency`), most frequent first."""
    frequency = metadata.get("ss_tag_frequency")
    if isinstance(frequency, str):
        import json

        try:
            frequency = json.loads(frequency)
        except ValueError:
            return []
    if not isinstance(frequency, dict):
        return []
    counts: dict[str, int] = {}
    for tags in frequency.values():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                if isinstance(count, int | float):
                    tag = str(tag).strip()
                    counts[tag] = counts.get(tag, 0) + int(count)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [tag for tag, _ in ranked[:limit] if tag]


def _lora_relative_path(path: str, name: str) -> str:
    """The path below the LoRA folder, in the server's separator; the bare name if unknown."""
    normalized = path.replace("\\", "/")
    lowered = normalized.lower()
    for folder in _LORA_FOLDERS:
        index = lowered.rfind(folder)
        if index >= 0:
            relative = normalized[index + len(folder) :]
            return relative.replace("/", "\\") if "\\" in path else relative
    return path.replace("\\", "/").rsplit("/", 1)[-1] if path else name


def lora_rows(listing: list[dict[str, Any]]) -> list[ModelRow]:
    """Rows of `/sdapi/v1/loras`, with the useful metadata kept: base model, trigger words,
    and the hashes the metadata carries."""
    rows = []
    for item in listing:
        name = _text(item.get("name"))
        if not name:
            continue
        raw_metadata = item.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        path = _text(item.get("path"))
        useful: dict[str, Any] = {
            key: metadata[key]
            for key in (
                "ss_base_model_version",
                "ss_sd_model_name",
                "ss_output_name",
                "ss_network_module",
                "ss_network_dim",
                "ss_network_alpha",
                "sshs_model_hash",
                "sshs_legacy_hash",
                "modelspec.architecture",
                "modelspec.title",
            )
            if key in metadata
        }
        rows.append(
            ModelRow(
                kind=ModelKind.LORA,
                title=name,
                name=name,
                relative_path=_lora_relative_path(path, name),
                filename=path,
                alias=_text(item.get("alias")) or name,
                short_hash=_hex(metadata.get("sshs_model_hash"), 64)[:12]
                or _text(metadata.get("sshs_legacy_hash"))[:12],
                base_model=_text(metadata.get("ss_base_model_version")),
                trigger_words=trigger_words(metadata),
                metadata=useful,
            )
        )
    return rows
