"""The A1111/Forge infotext (the PNG `parameters` text), read as the web UI reads it.

Grammar (REFERENCE.md D.1/D.2)::

    <prompt, any number of lines>
    Negative prompt: <negative prompt, any number of lines>   (absent when empty)
    <k1>: <v1>, <k2>: <v2>, ...                                (one line)

`parse_infotext` follows `parse_generation_parameters` steps 1-3: the last line is the
parameters line only when it holds at least three `key: value` pairs; values that are
JSON-quoted are unquoted; `WxH` values become `<key>-1` / `<key>-2`. Defaults for missing
keys (step 4) are not added: callers want what the image says, not what a UI would assume.

One normalisation comes first, for infotexts flattened onto a single line by EXIF tools
(D.3 sample 4, `Parameters : <prompt>.Negative prompt: ....Steps: 24, ...`): a leading
`Parameters :` label is dropped, and the `Negative prompt:` and the parameters line that
were joined to the previous text by a `.` are put back on their own lines.
"""

import json
import re
from typing import Any

PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
IMAGE_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE_PREFIX = "Negative prompt:"
MIN_PARAMS = 3

# An exiftool-style label in front of the text: "Parameters                      : ".
_TOOL_LABEL = re.compile(r"^\s*parameters\s+:\s", re.IGNORECASE)
# Where a flattened parameters line starts: "Steps: <n>," (always the first A1111 key).
_FLAT_PARAMS = re.compile(r"\bSteps: \d+,")


def _cut(text: str, at: int) -> tuple[str, str]:
    """Split at `at`, dropping the `.` that joined the two parts."""
    end = at - 1 if text[at - 1] == "." else at
    return text[:end], text[at:]


def normalize(text: str) -> str:
    """Undo single-line flattening (see the module docstring); other texts pass unchanged."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text.strip():
        return text
    text = _TOOL_LABEL.sub("", text, count=1)
    starts = [match.start() for match in _FLAT_PARAMS.finditer(text)]
    if not starts or starts[-1] == 0:
        return text
    head, tail = _cut(text, starts[-1])
    negative = head.find(NEGATIVE_PREFIX)
    if negative > 0:
        before, after = _cut(head, negative)
        head = f"{before}\n{after}"
    return f"{head}\n{tail}"


def parse_params_line(line: str) -> dict[str, str]:
    """The `key: value` pairs of a parameters line, in order, values unquoted; `WxH` values
    split into `<key>-1` and `<key>-2`."""
    values: dict[str, str] = {}
    for key, raw in PARAM_RE.findall(line):
        value = raw.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                decoded = json.loads(value)
                value = decoded if isinstance(decoded, str) else str(decoded)
            except ValueError:
                pass  # kept as written, as A1111 does
        size = IMAGE_SIZE_RE.match(value)
        if size:
            values[f"{key}-1"] = size.group(1)
            values[f"{key}-2"] = size.group(2)
        else:
            values[key] = value
    return values


def parse_infotext(text: str) -> dict[str, Any]:
    """`{"Prompt", "Negative prompt", <key>: <value>, ...}` of an infotext (strings)."""
    *lines, last = normalize(text).strip().split("\n")
    if len(PARAM_RE.findall(last)) < MIN_PARAMS:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if not in_negative and line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        (negative if in_negative else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    result.update(parse_params_line(last))
    return result


def parse_name_hashes(value: str) -> list[tuple[str, str]]:
    """`Lora hashes` / `TI hashes` values: `"name1: h1, name2: h2"` -> [(name, hash)].

    Names had `:` and `,` removed by the writer, so the last `:` of each part separates
    the hash.
    """
    pairs = []
    for part in value.split(","):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip() and digest.strip():
            pairs.append((name.strip(), digest.strip()))
    return pairs
