"""Signed links: a path that carries its own permission (`?exp=<unix time>&sig=<HMAC>`), for
what cannot send an API key: an `<img>` tag, a push notification's image, a shared link.

The signature is an HMAC-SHA256 of the path and the expiry, keyed from SECRET_KEY with a
salt naming the links' purpose (django.utils.crypto.salted_hmac), so a signature made for
one purpose opens nothing of another, and rotating SECRET_KEY revokes every link. The query
string is not signed: a link's other parameters (a thumbnail's `size` and `format`) may vary
under one signature. Nothing is stored: a link cannot be revoked before it expires, except
by rotating the key.
"""

import base64
import functools
import hmac
import math
import time
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from core_app.errors import MobileSDError

__all__ = [
    "EXPIRY_PARAMETER",
    "SIGNATURE_PARAMETER",
    "InvalidSignature",
    "LinkSigner",
]

EXPIRY_PARAMETER = "exp"
SIGNATURE_PARAMETER = "sig"
# An expiry longer than this is not a number we made (and would overflow a timestamp).
_MAX_EXPIRY_DIGITS = 12


class InvalidSignature(MobileSDError):
    """A signed link refused: tampered with (`invalid_signature`) or out of date
    (`expired_link`). A 403: the link names something that exists, it just does not open it."""

    status_code = 403
    default_code = "invalid_signature"


@dataclass(frozen=True)
class LinkSigner:
    """Signs and checks the links of one `purpose` (the HMAC's salt), good for `lifetime`
    seconds.

    An expiry is rounded up to a window of an eighth of the lifetime, so every link made for
    a path within one window is the same URL: a phone caches images by URL, and a response
    listing links (a job's status, with its ETag) stays the same for that long. A link is
    therefore good for between `lifetime` and 9/8 of it.
    """

    purpose: str
    lifetime: int

    @property
    def window(self) -> int:
        return max(1, self.lifetime // 8)

    def expiry(self, *, now: float | None = None) -> int:
        """The expiry a link made now carries (unix seconds)."""
        now = time.time() if now is None else now
        return math.ceil((now + self.lifetime) / self.window) * self.window

    def signature(self, path: str, expiry: int) -> str:
        # The path as the request will carry it: Django decodes percent-escapes in
        # request.path, while reverse() writes them.
        message = f"{unquote(path)}\n{expiry}"
        # salted_hmac(self.purpose, message, algorithm="sha256"), from a copy of the HMAC
        # keyed once per purpose and SECRET_KEY (a list page signs two links an image:
        # deriving the key each time was most of a signature's cost).
        mac = _keyed_hmac(self.purpose, settings.SECRET_KEY).copy()
        mac.update(message.encode())
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def query(self, path: str, *, now: float | None = None, expiry: int | None = None) -> str:
        """`exp=…&sig=…` for `path` (no `?`); `expiry`: the one `expiry()` gave already
        (links made together), else the one for now."""
        expiry = self.expiry(now=now) if expiry is None else expiry
        return f"{EXPIRY_PARAMETER}={expiry}&{SIGNATURE_PARAMETER}={self.signature(path, expiry)}"

    def sign(self, path: str, *, now: float | None = None, expiry: int | None = None) -> str:
        """`path` with its signed query (`expiry` as in `query`)."""
        return f"{path}?{self.query(path, now=now, expiry=expiry)}"

    def check(self, path: str, expiry: str, signature: str, *, now: float | None = None) -> None:
        """Nothing when `signature` is this signer's for `path` and `expiry` and the expiry
        has not passed; InvalidSignature otherwise. The signature is checked first (in
        constant time), so a changed expiry is `invalid_signature`, not `expired_link`."""
        if not (expiry.isascii() and expiry.isdigit()) or len(expiry) > _MAX_EXPIRY_DIGITS:
            raise InvalidSignature("The link's exp is not a time MobileSD wrote.")
        if not constant_time_compare(self.signature(path, int(expiry)), signature):
            raise InvalidSignature("The link's signature does not match it (changed or cut?).")
        now = time.time() if now is None else now
        if int(expiry) <= now:
            raise InvalidSignature(
                "The link has expired: ask MobileSD for the job's links again.",
                code="expired_link",
            )
        if int(expiry) > now + self.lifetime + self.window:
            # Made before the lifetime was shortened: the setting wins.
            raise InvalidSignature(
                "The link outlives the configured lifetime: ask for the job's links again.",
                code="expired_link",
            )


@functools.lru_cache(maxsize=16)
def _keyed_hmac(purpose: str, secret: str) -> hmac.HMAC:
    """The HMAC salted_hmac makes for `purpose` and `secret`, fed nothing yet: signatures
    copy it (never update it: it is shared between threads). Keyed by the secret too, so a
    changed SECRET_KEY (tests' overrides) signs with the new key at once."""
    return salted_hmac(purpose, b"", secret=secret, algorithm="sha256")
