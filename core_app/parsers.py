"""Request body parsing with a size limit: JSON, and images (multipart, or the image itself
as the body)."""

import codecs
import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, DataAndFiles, JSONParser, MultiPartParser

from core_app.errors import InvalidInput, PayloadTooLarge


def declared_length(parser_context: Mapping[str, Any] | None) -> int | None:
    """The request's declared Content-Length, or None when it has none (or not a number)."""
    request = (parser_context or {}).get("request")
    declared = request.META.get("CONTENT_LENGTH") if request is not None else None
    return int(declared) if declared and str(declared).isdigit() else None


def read_limited(
    stream: IO[Any] | None, limit: int, parser_context: Mapping[str, Any] | None
) -> bytes:
    """The whole body, or `PayloadTooLarge` if it declares or turns out to be over `limit`
    bytes (at most one byte more than the limit is read)."""
    declared = declared_length(parser_context)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit)
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise PayloadTooLarge(limit)
    return raw


# Room for the multipart boundaries and headers around a file.
MULTIPART_SLACK = 64 * 1024


class _ImageLimit:
    """The limit of an image body: the setting `limit_setting` names, in bytes; a larger
    body is `too_large(limit)` (a 413)."""

    limit_setting = "MOBILESD_MAX_BODY_BYTES"

    def limit(self) -> int:
        return int(getattr(settings, self.limit_setting))

    def too_large(self, limit: int) -> Exception:
        return PayloadTooLarge(limit)


class LimitedImageMultiPartParser(_ImageLimit, MultiPartParser):
    """Multipart up to the limit (and its framing): a larger declared body is refused before
    it is read."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        limit = self.limit()
        declared = declared_length(parser_context)
        if declared is not None and declared > limit + MULTIPART_SLACK:
            raise self.too_large(limit)
        return super().parse(stream, media_type, parser_context)


class LimitedRawImageParser(_ImageLimit, BaseParser):
    """The image itself as the body (`image/png`, `image/jpeg`, `image/webp`), parsed as
    `{"raw": <bytes>}`; a body without a declared length is read no further than the limit."""

    media_type = "image/*"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = self.limit()
        try:
            return {"raw": read_limited(stream, limit, parser_context)}
        except PayloadTooLarge as exc:
            raise self.too_large(limit) from exc


class LimitedOctetStreamImageParser(LimitedRawImageParser):
    """The image as `application/octet-stream`, what API client generators send for a binary
    body: the format is read from the bytes, as for `image/*`."""

    media_type = "application/octet-stream"


class LimitedJSONParser(JSONParser):
    """JSON bodies up to MOBILESD_MAX_BODY_BYTES; larger ones are a 413, not a memory spike.

    The declared Content-Length is checked first, and at most one byte more than the limit
    is read, so a chunked or lying client cannot stream an unbounded body either.
    """

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = read_limited(stream, settings.MOBILESD_MAX_BODY_BYTES, parser_context)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
            data = json.loads(text, parse_constant=_refuse_constant)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"The request body is not valid {encoding} text.") from exc
        except RecursionError as exc:
            raise ParseError(_too_deep()) from exc
        except ValueError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc
        check_storable(data)
        return data


NUL = "\x00"
NUL_MESSAGE = "The NUL character (\\u0000) is not allowed."
NUL_KEY_MESSAGE = "A key holds the NUL character (\\u0000), which is not allowed."

# Deeper than any request MobileSD documents (generation_params is 3 levels), far below
# where Python's recursion limit would be hit by whoever walks the data next.
MAX_JSON_DEPTH = 64


def _too_deep() -> str:
    return f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels."


def _refuse_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, which are not JSON and which PostgreSQL's jsonb
    # refuses.
    raise ValueError(f"{name} is not a JSON value")


def check_storable(data: Any) -> None:
    """Refuse parsed JSON that nests deeper than MAX_JSON_DEPTH (ParseError) or has a NUL
    character in a string or key (InvalidInput at its dotted path: PostgreSQL's text and
    jsonb cannot store one). Iterative, so no depth of input can exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                raise InvalidInput({path or "non_field_errors": [NUL_MESSAGE]})
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ParseError(_too_deep())
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and NUL in key:
                    raise InvalidInput({path or "non_field_errors": [NUL_KEY_MESSAGE]})
                stack.append((item, name, depth + 1))
