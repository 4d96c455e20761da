"""What the simulated Civitai knows: models, versions, files (with real bytes), images.

Plain dataclasses, no Django. Hashes follow REFERENCE.md C.7 exactly (SHA256, AutoV1,
AutoV2, AutoV3, CRC32 in Civitai's little-endian byte order), all upper-case; BLAKE3 is
left out (it needs a package outside the standard library).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, PngImagePlugin

# Civitai's ModelType values (REFERENCE.md C.6).
MODEL_TYPE_NAMES = (
    "Checkpoint",
    "TextualInversion",
    "Hypernetwork",
    "AestheticGradient",
    "LORA",
    "LoCon",
    "DoRA",
    "Controlnet",
    "Upscaler",
    "MotionModule",
    "VAE",
    "TextEncoder",
    "UNet",
    "CLIPVision",
    "Poses",
    "Wildcards",
    "Workflows",
    "ComfyWorkflows",
    "Detection",
    "VisionLanguage",
    "CLIP",
    "LLM",
    "Other",
)
# NsfwLevel bits (C.2) and the image `nsfwLevel` names that stand for them.
NSFW_LEVEL_BITS = {"None": 1, "Soft": 2, "Mature": 4, "X": 8, "Blocked": 32}
NSFW_QUERY_LEVELS = {"none": 1, "soft": 3, "mature": 7, "x": 31, "true": 60, "false": 1}

_CHUNK = 1024 * 1024
_AUTOV1_OFFSET = 0x100000
_AUTOV1_LENGTH = 0x10000


def safetensors_bytes(payload: bytes, metadata: dict[str, str] | None = None) -> bytes:
    """A small but well-formed safetensors file: 8-byte header length, JSON header, data."""
    header = {
        "__metadata__": dict(metadata or {}),
        "weight": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + payload


def file_hashes(chunks: Iterator[bytes], size: int, head: bytes) -> dict[str, str]:
    """Civitai's hashes of a file given as chunks (C.7); `head` = its first 8 bytes."""
    sha = hashlib.sha256()
    crc = 0
    autov1 = hashlib.sha256()
    autov3 = hashlib.sha256()
    header_length = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    # AutoV3 skips the safetensors header; a file that is not one has no AutoV3.
    skip = 8 + header_length if 0 < header_length < size - 8 else -1
    position = 0
    for chunk in chunks:
        sha.update(chunk)
        crc = zlib.crc32(chunk, crc)
        end = position + len(chunk)
        low, high = max(position, _AUTOV1_OFFSET), min(end, _AUTOV1_OFFSET + _AUTOV1_LENGTH)
        if low < high:
            autov1.update(chunk[low - position : high - position])
        if skip >= 0 and end > skip:
            autov3.update(chunk[max(skip - position, 0) :])
        position = end
    digest = sha.hexdigest().upper()
    hashes = {
        "AutoV2": digest[:10],
        "SHA256": digest,
        "CRC32": crc.to_bytes(4, "little").hex().upper(),
    }
    if size >= 2 * _AUTOV1_OFFSET:
        hashes["AutoV1"] = autov1.hexdigest()[:8].upper()
    if skip >= 0:
        hashes["AutoV3"] = autov3.hexdigest()[:12].upper()
    return hashes


@dataclass
class SimFile:
    """A file of a version. Its bytes are `content`, or the file at `path` (e.g. a multi-GB
    sparse file for benchmarks). `published_sha256` overrides the SHA256 Civitai shows (to
    play a file whose published hash is wrong)."""

    id: int
    name: str
    content: bytes | None = None
    path: str | None = None
    type: str = "Model"
    format: str = "SafeTensor"
    size: str = "pruned"
    fp: str = "fp16"
    primary: bool = False
    published_sha256: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.content is None) == (self.path is None):
            raise ValueError("give a SimFile exactly one of content or path")
        if not self.hashes:
            self.hashes = file_hashes(self.chunks(), self.length, self.read(0, 8))
        if self.published_sha256:
            self.hashes["SHA256"] = self.published_sha256.upper()

    @property
    def length(self) -> int:
        if self.content is not None:
            return len(self.content)
        assert self.path is not None
        return os.path.getsize(self.path)

    def read(self, start: int, length: int) -> bytes:
        if self.content is not None:
            return self.content[start : start + length]
        assert self.path is not None
        with open(self.path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end) in chunks of at most 1 MiB, never all in memory."""
        stop = self.length if end is None else end
        if self.content is not None:
            for offset in range(start, stop, _CHUNK):
                yield self.content[offset : min(offset + _CHUNK, stop)]
            return
        assert self.path is not None
        with open(self.path, "rb") as handle:
            handle.seek(start)
            position = start
            while position < stop:
                block = handle.read(min(_CHUNK, stop - position))
                if not block:
                    return
                position += len(block)
                yield block


@dataclass
class SimImage:
    """An image on the site; `meta` is its generation data (None: uploaded without it)."""

    id: int
    meta: dict[str, Any] | None = None
    width: int = 512
    height: int = 512
    nsfw_level: str = "None"
    username: str = "sim_user"
    post_id: int = 1
    base_model: str = "SDXL 1.0"
    model_version_ids: list[int] = field(default_factory=list)
    created_at: str = "2025-05-14T02:34:48.985Z"

    def png(self) -> bytes:
        image = Image.new("RGB", (64, 64), (40 + self.id % 200, 90, 160))
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", f"simulated Civitai image {self.id}")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()


@dataclass
class SimVersion:
    """A model version. The flags play the download error table (C.5)."""

    id: int
    name: str
    files: list[SimFile]
    base_model: str = "SDXL 1.0"
    trained_words: list[str] = field(default_factory=list)
    images: list[SimImage] = field(default_factory=list)
    published: bool = True
    require_auth: bool = False
    downloads_disabled: bool = False
    early_access_deadline: str | None = None
    blocked: bool = False
    # Only these API keys may download it (a paid / private resource); None = everyone.
    allowed_keys: set[str] | None = None


@dataclass
class SimModel:
    id: int
    name: str
    type: str
    versions: list[SimVersion]
    nsfw: bool = False
    # None, "Archived" or "TakenDown" (C.3).
    mode: str | None = None
    poi: bool = False
    creator: str = "sim_creator"


class Catalog:
    """The models and images of the simulated site, with lookups by id and hash."""

    def __init__(self, models: list[SimModel], images: list[SimImage]) -> None:
        self.models = list(models)
        self.images = list(images)

    def model(self, model_id: int) -> SimModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def version(self, version_id: int) -> tuple[SimModel, SimVersion] | None:
        for model in self.models:
            for version in model.versions:
                if version.id == version_id:
                    return model, version
        return None

    def file(self, file_id: int) -> tuple[SimModel, SimVersion, SimFile] | None:
        for model in self.models:
            for version in model.versions:
                for sim_file in version.files:
                    if sim_file.id == file_id:
                        return model, version, sim_file
        return None

    def by_hash(self, value: str) -> tuple[SimModel, SimVersion] | None:
        """Any hash type of any file of a published version; oldest version wins (C.4)."""
        wanted = value.upper()
        matches = [
            (model, version)
            for model in self.models
            for version in model.versions
            if version.published and any(wanted in f.hashes.values() for f in version.files)
        ]
        return min(matches, key=lambda mv: mv[1].id) if matches else None

    def image(self, image_id: int) -> SimImage | None:
        return next((i for i in self.images if i.id == image_id), None)


# --- JSON shapes ------------------------------------------------------------------------------


def primary_file(version: SimVersion) -> SimFile | None:
    return next(
        (f for f in version.files if f.primary), version.files[0] if version.files else None
    )


def file_json(base: str, version: SimVersion, sim_file: SimFile) -> dict[str, Any]:
    query = f"type={sim_file.type}&format={sim_file.format}&size={sim_file.size}&fp={sim_file.fp}"
    return {
        "id": sim_file.id,
        "sizeKB": sim_file.length / 1024,
        "name": sim_file.name,
        "type": sim_file.type,
        "pickleScanResult": "Success",
        "pickleScanMessage": "No Pickle imports",
        "virusScanResult": "Success",
        "virusScanMessage": None,
        "scannedAt": "2025-05-14T02:40:00.000Z",
        "metadata": {"format": sim_file.format, "size": sim_file.size, "fp": sim_file.fp},
        "hashes": dict(sim_file.hashes),
        "primary": sim_file.primary,
        "downloadUrl": f"{base}/api/download/models/{version.id}?{query.replace(' ', '%20')}",
    }


def image_json(base: str, image: SimImage, *, meta: Any) -> dict[str, Any]:
    return {
        "id": image.id,
        "url": f"{base}/xG1nkqKTMzGDvpLrqFT7WA/sim-{image.id}/original=true/{image.id}.png",
        "hash": "U5Bo~n-;00%M~qof%Mof00Rj~qxu",
        "width": image.width,
        "height": image.height,
        "nsfwLevel": image.nsfw_level,
        "type": "image",
        "nsfw": image.nsfw_level not in ("None", "Soft"),
        "browsingLevel": NSFW_LEVEL_BITS.get(image.nsfw_level, 1),
        "createdAt": image.created_at,
        "postId": image.post_id,
        "stats": {
            "cryCount": 0,
            "laughCount": 0,
            "likeCount": 3,
            "dislikeCount": 0,
            "heartCount": 1,
            "commentCount": 0,
        },
        "meta": meta,
        "username": image.username,
        "baseModel": image.base_model,
        "modelVersionIds": list(image.model_version_ids),
    }


def version_json(base: str, model: SimModel, version: SimVersion) -> dict[str, Any]:
    """`GET /api/v1/model-versions/:id` (C.4)."""
    primary = primary_file(version)
    return {
        "id": version.id,
        "modelId": model.id,
        "name": version.name,
        "nsfwLevel": 1,
        "createdAt": "2025-05-01T00:00:00.000Z",
        "updatedAt": "2025-05-02T00:00:00.000Z",
        "status": "Published" if version.published else "Unpublished",
        "publishedAt": "2025-05-02T00:00:00.000Z",
        "trainedWords": list(version.trained_words),
        "trainingStatus": None,
        "trainingDetails": None,
        "baseModel": version.base_model,
        "baseModelType": "Standard",
        "description": "<p>Simulated version.</p>",
        "uploadType": "Created",
        "usageControl": "Download",
        "air": f"urn:air:sdxl:{model.type.lower()}:civitai:{model.id}@{version.id}",
        "availability": "EarlyAccess" if version.early_access_deadline else "Public",
        "earlyAccessEndsAt": version.early_access_deadline,
        "stats": {"downloadCount": 42, "thumbsUpCount": 7},
        "model": {"name": model.name, "type": model.type, "nsfw": model.nsfw, "poi": model.poi}
        | ({"mode": model.mode} if model.mode else {}),
        "files": [file_json(base, version, f) for f in version.files]
        if model.mode != "Archived"
        else [],
        "images": [
            image_json(base, image, meta=image.meta) | {"availability": "Public"}
            for image in version.images[:10]
        ]
        if model.mode != "TakenDown"
        else [],
        "downloadUrl": f"{base}/api/download/models/{version.id}" if primary else None,
    }


def model_json(base: str, model: SimModel) -> dict[str, Any]:
    """`GET /api/v1/models/:id` (C.3): versions newest first, primary flag only when true."""
    versions = []
    for version in sorted(model.versions, key=lambda v: -v.id):
        if not version.published:
            continue
        files = [file_json(base, version, f) for f in version.files]
        for entry in files:
            if not entry["primary"]:
                del entry["primary"]
        versions.append(
            {
                "id": version.id,
                "name": version.name,
                "baseModel": version.base_model,
                "baseModelType": "Standard",
                "publishedAt": "2025-05-02T00:00:00.000Z",
                "trainedWords": list(version.trained_words),
                "stats": {"downloadCount": 42, "thumbsUpCount": 7},
                "files": files if model.mode != "Archived" else [],
                "images": [image_json(base, i, meta=i.meta) for i in version.images[:10]],
                "downloadUrl": f"{base}/api/download/models/{version.id}",
            }
        )
    return {
        "id": model.id,
        "name": model.name,
        "description": "<p>Simulated model.</p>",
        "type": model.type,
        "nsfw": model.nsfw,
        "nsfwLevel": 1,
        "availability": "Public",
        "allowNoCredit": True,
        "allowCommercialUse": ["Image"],
        "allowDerivatives": True,
        "allowDifferentLicense": True,
        "minor": False,
        "poi": model.poi,
        "sfwOnly": False,
        "stats": {
            "downloadCount": 42,
            "thumbsUpCount": 7,
            "thumbsDownCount": 0,
            "commentCount": 1,
            "tippedAmountCount": 0,
        },
        "creator": {"username": model.creator, "image": None},
        "tags": ["simulated"],
        "modelVersions": versions,
    } | ({"mode": model.mode} if model.mode else {})


# --- a small demo catalogue (the management command and quick tests) --------------------------

DEMO_CHECKPOINT = safetensors_bytes(b"checkpoint-weights" * 4096, {"modelspec.title": "Demo XL"})
DEMO_LORA = safetensors_bytes(
    b"lora-weights" * 2048, {"ss_output_name": "demo_style", "ss_base_model_version": "sdxl"}
)

DEMO_INFOTEXT_META: dict[str, Any] = {
    "prompt": "a lighthouse at dusk, <lora:demo_style:0.8>",
    "negativePrompt": "blurry, lowres",
    "cfgScale": 6.5,
    "steps": 28,
    "sampler": "DPM++ 2M",
    "seed": 1234567890,
    "clipSkip": 2,
    "Size": "832x1216",
    "Model": "demoXL_v10",
    "Schedule type": "Karras",
    "Version": "f2.0.1v1.10.1-previous-669-gdfdcbab6",
}


def demo_catalog() -> Catalog:
    checkpoint = SimFile(
        id=9001, name="demoXL_v10.safetensors", content=DEMO_CHECKPOINT, primary=True
    )
    lora = SimFile(id=9101, name="demo_style.safetensors", content=DEMO_LORA, primary=True)
    meta = dict(DEMO_INFOTEXT_META)
    meta["Model hash"] = checkpoint.hashes["AutoV2"].lower()
    meta["hashes"] = {
        "model": checkpoint.hashes["AutoV2"].lower(),
        "lora:demo_style": lora.hashes["AutoV3"].lower(),
    }
    meta["resources"] = [
        {"type": "model", "name": "demoXL_v10", "hash": checkpoint.hashes["AutoV2"].lower()},
        {"type": "lora", "name": "demo_style", "weight": 0.8},
    ]
    images = [
        SimImage(id=1001, meta=meta, width=832, height=1216, model_version_ids=[900, 910]),
        SimImage(id=1002, meta=None),
    ]
    models = [
        SimModel(
            id=90,
            name="Demo XL",
            type="Checkpoint",
            versions=[SimVersion(id=900, name="v1.0", files=[checkpoint], images=images[:1])],
        ),
        SimModel(
            id=91,
            name="Demo Style",
            type="LORA",
            versions=[
                SimVersion(id=910, name="v1", files=[lora], trained_words=["demo style"]),
            ],
        ),
    ]
    return Catalog(models, images)
