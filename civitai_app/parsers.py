"""Image uploads with a size limit (MOBILESD_MAX_IMAGE_UPLOAD_BYTES): larger ones are a 413
before they are read, and a body without a declared length is read no further than it."""

from core_app.parsers import (
    LimitedImageMultiPartParser,
    LimitedOctetStreamImageParser,
    LimitedRawImageParser,
)


class LimitedMultiPartParser(LimitedImageMultiPartParser):
    limit_setting = "MOBILESD_MAX_IMAGE_UPLOAD_BYTES"


class RawImageParser(LimitedRawImageParser):
    limit_setting = "MOBILESD_MAX_IMAGE_UPLOAD_BYTES"


class RawBytesParser(LimitedOctetStreamImageParser):
    limit_setting = "MOBILESD_MAX_IMAGE_UPLOAD_BYTES"
