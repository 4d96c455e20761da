"""Image uploads with a size limit (MOBILESD_MAX_IMAGE_UPLOAD_BYTES): larger ones are a 413
before they are read, and a body without a declared length is read no further than it."""

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.parsers import BaseParser, DataAndFiles, MultiPartParser

from core_app.errors import PayloadTooLarge
from core_app.parsers import declared_length, read_limited

# Room for the multipart boundaries and headers around the file.
_MULTIPART_SLACK = 64 * 1024


class LimitedMultiPartParser(MultiPartParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> DataAndFiles:
        limit = settings.MOBILESD_MAX_IMAGE_UPLOAD_BYTES
        declared = declared_length(parser_context)
        if declared is not None and declared > limit + _MULTIPART_SLACK:
            raise PayloadTooLarge(limit)
        return super().parse(stream, media_type, parser_context)


class RawImageParser(BaseParser):
    """The image itself as the body: `Content-Type: image/png`, `image/jpeg` or `image/webp`.
    Parsed as `{"raw": <bytes>}`."""

    media_type = "image/*"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = read_limited(stream, settings.MOBILESD_MAX_IMAGE_UPLOAD_BYTES, parser_context)
        return {"raw": raw}


class RawBytesParser(RawImageParser):
    """The image as `application/octet-stream`, what API client generators send for a binary
    body: the format is read from the bytes, as for `image/*`."""

    media_type = "application/octet-stream"
