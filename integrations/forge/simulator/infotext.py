"""The A1111 infotext ("parameters" PNG text): writer (REFERENCE D.1) and parser (D.2)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
_NEGATIVE_PREFIX = "Negative prompt:"


def quote(value: Any) -> Any:
    """JSON-quote a value containing `,`, `:` or a newline; leave anything else unchanged."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(value, ensure_ascii=False)


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """Build the infotext: prompt, optional `Negative prompt:` line, one `k: v, ...` line.

    Keys with a `None` value are left out; insertion order is kept (callers build it in the
    server's order: Steps, Sampler, Schedule type, CFG scale, Seed, ..., Version).
    """
    negative = f"\n{_NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    line = ", ".join(
        key if key == value else f"{key}: {quote(value)}"
        for key, value in params.items()
        if value is not None
    )
    return f"{prompt}{negative}\n{line}".strip()


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an infotext the way `parse_generation_parameters` does (steps 1-3 plus defaults).

    Values stay strings (quoted ones are JSON-decoded); `Size: WxH` becomes `Size-1`/`Size-2`.
    """
    res: dict[str, Any] = {}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    *lines, lastline = text.strip().split("\n")
    if len(_RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX) :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    res["Prompt"] = "\n".join(prompt_lines)
    res["Negative prompt"] = "\n".join(negative_lines)
    for key, value in _RE_PARAM.findall(lastline):
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        size = _RE_IMAGESIZE.match(value) if isinstance(value, str) else None
        if size:
            res[f"{key}-1"] = size.group(1)
            res[f"{key}-2"] = size.group(2)
        else:
            res[key] = value
    defaults: dict[str, Any] = {
        "Clip skip": "1",
        "Hires resize-1": 0,
        "Hires resize-2": 0,
        "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "RNG": "GPU",
        "Schedule type": "Automatic",
    }
    for key, value in defaults.items():
        res.setdefault(key, value)
    return res
