"""An image's generation data as a MobileSD recipe: `generation_params` in MobileSD's names
and the resources (checkpoint, LoRAs, embeddings, VAE) it used. Pure functions, no I/O:
the image-info service (`civitai_app.image_info`) looks the resources up and answers.

Both sources are first brought to the infotext's own keys (`Steps`, `CFG scale`,
`Size-1`, ...): a parsed infotext already has them, and Civitai's `meta` uses them
verbatim except for a few camel-case renames (REFERENCE.md C.2).
"""

import re
from dataclasses import dataclass, field
from typing import Any

from civitai_app.extension_recipes import extension_params_from
from civitai_app.infotext import IMAGE_SIZE_RE, parse_name_hashes
from queue_app.params import scheduler_for

# Civitai meta names -> infotext keys (C.2: "mapped from Seed, CFG scale, Sampler, ...").
_META_KEYS = {
    "prompt": "Prompt",
    "negativePrompt": "Negative prompt",
    "cfgScale": "CFG scale",
    "steps": "Steps",
    "sampler": "Sampler",
    "seed": "Seed",
    "clipSkip": "Clip skip",
    "denoise": "Denoising strength",
    "denoisingStrength": "Denoising strength",
    "scheduler": "Schedule type",
}
# Meta entries that are structures, not infotext values.
_META_STRUCTURES = frozenset(
    {"hashes", "resources", "civitaiResources", "additionalResources", "comfy", "workflow"}
)
# Sampler values that name no sampler (Civitai's Flux images say "Undefined").
_NO_SAMPLER = frozenset({"", "undefined", "none"})
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# SHA-256 of empty input: what a hash of an unreadable file looks like (C.7).
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Civitai ModelType names for the type words used in meta and infotext.
_TYPE_WORDS = {
    "model": "Checkpoint",
    "checkpoint": "Checkpoint",
    "lora": "LORA",
    "locon": "LoCon",
    "lycoris": "LoCon",
    "lyco": "LoCon",
    "dora": "DoRA",
    "embed": "TextualInversion",
    "embedding": "TextualInversion",
    "textualinversion": "TextualInversion",
    "ti": "TextualInversion",
    "hypernet": "Hypernetwork",
    "hypernetwork": "Hypernetwork",
    "vae": "VAE",
}
_TYPE_ORDER = ["Checkpoint", "LORA", "LoCon", "DoRA", "TextualInversion", "VAE", "Hypernetwork"]


def civitai_type(word: str) -> str:
    """The Civitai ModelType a meta/infotext type word stands for (unknown words kept)."""
    return _TYPE_WORDS.get(word.strip().lower().replace(" ", ""), word.strip())


def type_group(model_type: str) -> str:
    """LORA, LoCon and DoRA are one kind of file for a server."""
    return "LORA" if model_type in ("LORA", "LoCon", "DoRA") else model_type


def usable_hash(value: str) -> str:
    """The hash, lower-case, if it can identify a file (8, 10, 12 or 64 hex digits and not
    the hash of empty input); else ""."""
    text = value.strip().lower()
    if len(text) not in (8, 10, 12, 64) or not _HEX.match(text):
        return ""
    return "" if _EMPTY_SHA256.startswith(text) else text


def values_from_meta(meta: dict[str, Any]) -> dict[str, str]:
    """Civitai's `meta` as infotext keys (strings), structures left out."""
    values: dict[str, str] = {}
    for key, value in meta.items():
        if key in _META_STRUCTURES or isinstance(value, dict | list) or value is None:
            continue
        name = _META_KEYS.get(key, key)
        text = str(value).strip() if not isinstance(value, bool) else str(value)
        if name == "Size" or name.endswith(" resize"):
            size = IMAGE_SIZE_RE.match(text)
            if size:
                values[f"{name}-1"], values[f"{name}-2"] = size.group(1), size.group(2)
                continue
        values[name] = text
    if "Size-1" not in values and meta.get("width") and meta.get("height"):
        values["Size-1"], values["Size-2"] = str(meta["width"]), str(meta["height"])
    values.pop("width", None)
    values.pop("height", None)
    return values


# --- generation_params ----------------------------------------------------------------------


def _int(value: str | None) -> int | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return int(number) if number is not None and number.is_integer() else None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def split_sampler(sampler: str) -> tuple[str, str | None]:
    """`DPM++ 2M Karras` -> (`DPM++ 2M`, `Karras`): the scheduler that older infotexts put
    at the end of the sampler name (REFERENCE.md A.6)."""
    words = sampler.split()
    for index in range(1, len(words)):
        label = scheduler_for(" ".join(words[index:]))
        if label is not None:
            return " ".join(words[:index]), label
    return sampler, None


_INT_KEYS = {
    "steps": "Steps",
    "width": "Size-1",
    "height": "Size-2",
    "seed": "Seed",
    "clip_skip": "Clip skip",
    "hires_steps": "Hires steps",
    "subseed": "Variation seed",
}
_FLOAT_KEYS = {
    "cfg_scale": "CFG scale",
    "distilled_cfg_scale": "Distilled CFG Scale",
    "denoising_strength": "Denoising strength",
    "hires_scale": "Hires upscale",
    "subseed_strength": "Variation seed strength",
}


def generation_params_from(
    values: dict[str, str],
    *,
    checkpoint_name: str | None = None,
    loras: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """MobileSD `generation_params` for these infotext values, keeping only values that
    `POST /api/v1/generate` accepts (anything out of its ranges is left out)."""
    from queue_app.serializers import GenerationParamsSerializer

    params: dict[str, Any] = {}
    for name, key in (("positive_prompt", "Prompt"), ("negative_prompt", "Negative prompt")):
        if values.get(key) is not None:
            params[name] = values[key]
    for name, key in _INT_KEYS.items():
        number = _int(values.get(key))
        if number is not None:
            params[name] = number
    for name, key in _FLOAT_KEYS.items():
        real = _float(values.get(key))
        if real is not None:
            params[name] = real
    sampler = (values.get("Sampler") or "").strip()
    if sampler.lower() not in _NO_SAMPLER:
        scheduler = values.get("Schedule type")
        if not scheduler:
            sampler, scheduler = split_sampler(sampler)
        params["sampler_name"] = sampler
        if scheduler:
            params["scheduler_or_quality_preset"] = scheduler
    if any(key in values for key in ("Hires upscale", "Hires upscaler", "Hires steps")):
        params["enable_hires_fix"] = True
        if values.get("Hires upscaler"):
            params["upscaler_model"] = values["Hires upscaler"]
    if values.get("Face restoration"):
        params["restore_faces"] = True
    model = checkpoint_name or values.get("Model")
    if model:
        params["checkpoint_name"] = model
    if loras:
        params["loras"] = loras
    params["num_images"] = 1
    # img2img / inpaint settings, ADetailer and ControlNet units, hires pass, VAE, modules.
    params.update(extension_params_from(values))
    # Drop what generate would refuse, so the recipe can be sent as it is.
    for _ in range(len(params)):
        serializer = GenerationParamsSerializer(data=params)
        if serializer.is_valid():
            break
        for bad in serializer.errors:
            params.pop(str(bad), None)
    return params


def lora_tags(prompt: str) -> dict[str, float | None]:
    """`<lora:name:weight>` tags of a prompt: {name: weight}."""
    tags: dict[str, float | None] = {}
    for name, weight in _LORA_TAG.findall(prompt):
        tags[name.strip()] = _float(weight) if weight else 1.0
    return tags


def rename_lora_tags(prompt: str, renames: dict[str, str]) -> str:
    """Replace LoRA names in `<lora:...>` tags (case-insensitive) by a server's names."""
    folded = {old.casefold(): new for old, new in renames.items()}

    def replace(match: re.Match[str]) -> str:
        new = folded.get(match.group(1).strip().casefold())
        if new is None:
            return match.group(0)
        start, end = match.span(1)
        offset = match.start()
        text = match.group(0)
        return text[: start - offset] + new + text[end - offset :]

    return _LORA_TAG.sub(replace, prompt)


# --- resources ------------------------------------------------------------------------------


@dataclass
class Resource:
    """A model an image used. What the image says (`name`, `hash`, `weight`,
    `model_version_id`) and, once looked up on Civitai, what it is there."""

    type: str
    name: str = ""
    hash: str = ""
    weight: float | None = None
    model_version_id: int | None = None
    model_id: int | None = None
    model_name: str = ""
    version_name: str = ""
    file_name: str = ""
    hashes: dict[str, str] = field(default_factory=dict)
    servers: list[str] = field(default_factory=list)
    # The name to use on our servers (the cached file name) when a server has it.
    server_name: str = ""
    server_path: str = ""

    def same_as(self, other: "Resource") -> bool:
        if type_group(self.type) != type_group(other.type):
            return False
        if self.model_version_id and self.model_version_id == other.model_version_id:
            return True
        if self.name and other.name and self.name.casefold() == other.name.casefold():
            return True
        mine, theirs = usable_hash(self.hash), usable_hash(other.hash)
        if mine and theirs and (mine.startswith(theirs) or theirs.startswith(mine)):
            return True
        # An image has one checkpoint: a nameless, hashless one is the same as any other.
        return self.type == "Checkpoint" and not (self.name and other.name)

    def merge(self, other: "Resource") -> None:
        for attr in ("name", "hash", "model_name", "version_name", "file_name"):
            if not getattr(self, attr) and getattr(other, attr):
                setattr(self, attr, getattr(other, attr))
        for attr in ("weight", "model_version_id", "model_id"):
            if getattr(self, attr) is None and getattr(other, attr) is not None:
                setattr(self, attr, getattr(other, attr))
        if not self.hashes:
            self.hashes = dict(other.hashes)


def _add(resources: list[Resource], new: Resource) -> None:
    for existing in resources:
        if existing.same_as(new):
            existing.merge(new)
            return
    resources.append(new)


def resources_from(values: dict[str, str], meta: dict[str, Any] | None = None) -> list[Resource]:
    """The resources an image names, de-duplicated, checkpoint first.

    From the infotext: `Model`/`Model hash`, `Lora hashes`, `TI hashes`, `VAE`/`VAE hash`,
    and LoRA weights from the prompt's `<lora:name:weight>` tags. From Civitai's meta also
    `hashes` ({"model", "lora:<name>", "embed:<name>", "vae"}), `resources` and
    `civitaiResources` (which carry version ids and weights).
    """
    meta = meta or {}
    found: list[Resource] = []
    if values.get("Model") or values.get("Model hash"):
        _add(
            found,
            Resource("Checkpoint", name=values.get("Model", ""), hash=values.get("Model hash", "")),
        )
    for name, digest in parse_name_hashes(values.get("Lora hashes", "")):
        _add(found, Resource("LORA", name=name, hash=digest))
    for name, digest in parse_name_hashes(values.get("TI hashes", "")):
        _add(found, Resource("TextualInversion", name=name, hash=digest))
    if values.get("VAE") or values.get("VAE hash"):
        _add(found, Resource("VAE", name=values.get("VAE", ""), hash=values.get("VAE hash", "")))

    hashes = meta.get("hashes")
    if isinstance(hashes, dict):
        for key, digest in hashes.items():
            if not isinstance(digest, str):
                continue
            word, _, name = str(key).partition(":")
            _add(found, Resource(civitai_type(word), name=name.strip(), hash=digest))
    for entry in meta.get("resources") or []:
        if isinstance(entry, dict) and entry.get("type"):
            _add(
                found,
                Resource(
                    civitai_type(str(entry["type"])),
                    name=str(entry.get("name") or ""),
                    hash=str(entry.get("hash") or ""),
                    weight=_float(str(entry["weight"]))
                    if entry.get("weight") is not None
                    else None,
                ),
            )
    for entry in meta.get("civitaiResources") or []:
        if not isinstance(entry, dict):
            continue
        version_id = _int(str(entry.get("modelVersionId"))) if entry.get("modelVersionId") else None
        if version_id is None:
            continue
        _add(
            found,
            Resource(
                civitai_type(str(entry.get("type") or "")),
                model_version_id=version_id,
                version_name=str(entry.get("modelVersionName") or ""),
                weight=_float(str(entry["weight"])) if entry.get("weight") is not None else None,
            ),
        )

    weights = lora_tags(values.get("Prompt", ""))
    for resource in found:
        if type_group(resource.type) == "LORA" and resource.weight is None:
            folded = {name.casefold(): weight for name, weight in weights.items()}
            resource.weight = folded.get(resource.name.casefold())
    order = {name: index for index, name in enumerate(_TYPE_ORDER)}
    return sorted(found, key=lambda r: order.get(r.type, len(order)))


def dedupe(resources: list[Resource]) -> list[Resource]:
    """Merge resources that turned out to be the same once looked up (same version)."""
    merged: list[Resource] = []
    for resource in resources:
        _add(merged, resource)
    return merged


def generation_params_for_servers(
    values: dict[str, str], resources: list[Resource]
) -> dict[str, Any]:
    """`generation_params_from(values)` in our servers' names: the checkpoint's path on a
    server that has it, LoRA tags renamed to the servers' file names, and the LoRAs the
    prompt does not tag (Civitai lists them apart) added with their weights."""
    checkpoint = next((r for r in resources if r.type == "Checkpoint" and r.server_path), None)
    loras = [r for r in resources if type_group(r.type) == "LORA"]
    renames = {
        r.name: r.server_name for r in loras if r.name and r.server_name and r.name != r.server_name
    }
    values = dict(values)
    values["Prompt"] = rename_lora_tags(values.get("Prompt", ""), renames)
    tagged = {name.casefold() for name in lora_tags(values["Prompt"])}
    extra = [
        {"name": r.server_name or r.name, "weight": r.weight}
        for r in loras
        if r.weight is not None
        and (r.server_name or r.name)
        and (r.server_name or r.name).casefold() not in tagged
    ]
    return generation_params_from(
        values,
        checkpoint_name=checkpoint.server_path if checkpoint else None,
        loras=extra or None,
    )
