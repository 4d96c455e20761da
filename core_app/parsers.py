"""Request body parsing with a size limit."""

import codecs
import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from core_app.errors import PayloadTooLarge


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
            return json.loads(text)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"The request body is not valid {encoding} text.") from exc
        except ValueError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc
