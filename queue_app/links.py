"""Links to a job's images: the plain API paths (which need an API key) and signed ones
(`?exp=…&sig=…`, core_app.signed_links) that open without a key until they expire, for what
cannot send a key: an `<img>` tag, a push notification, a webhook receiver, a shared link.

A signed link signs the image's path and its expiry only: it opens that one image (or its
thumbnail) of that one job, and a thumbnail link's `size` and `format` may be added or
changed without breaking it. Links are absolute on MOBILESD_PUBLIC_URL when it is set, else
paths: never built from a request's Host header, which the client chooses.
"""

import functools
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import get_script_prefix, get_urlconf, reverse
from rest_framework.request import Request

from core_app.signed_links import EXPIRY_PARAMETER, SIGNATURE_PARAMETER, LinkSigner
from queue_app.models import Job, JobImage, JobStatus

__all__ = [
    "image_link_expiry",
    "image_link_signer",
    "image_path",
    "job_has_image_links",
    "job_image_links",
    "job_image_names",
    "public_link",
    "signed_image_url",
    "signed_link_check",
    "signed_link_present",
]

# The HMAC's salt: a signature for image links opens nothing else signed with SECRET_KEY.
IMAGE_LINK_PURPOSE = "mobilesd.queue.image-link"


def image_link_signer() -> LinkSigner:
    """The signer of image links, with the lifetime MOBILESD_SIGNED_LINK_SECONDS says now."""
    return LinkSigner(purpose=IMAGE_LINK_PURPOSE, lifetime=settings.MOBILESD_SIGNED_LINK_SECONDS)


def image_link_expiry(*, now: float | None = None) -> datetime:
    """When the signed links made now expire (the same for every link of one window)."""
    return datetime.fromtimestamp(image_link_signer().expiry(now=now), tz=UTC)


def public_link(path: str) -> str:
    """`path` on MOBILESD_PUBLIC_URL's origin when that is set, else `path` itself."""
    if not settings.MOBILESD_PUBLIC_URL:
        return path
    # Its origin only: the path comes from the URL conf, script prefix included.
    public = urlsplit(settings.MOBILESD_PUBLIC_URL)
    return f"{public.scheme}://{public.netloc.rpartition('@')[2]}{path}"


def image_path(image: JobImage, *, thumbnail: bool = False) -> str:
    """The API path of `image` (or of its thumbnail), script prefix included."""
    return _path_of(image.job_id, image.index, thumbnail=thumbnail)


def _path_of(
    job_id: Any, index: int, *, thumbnail: bool, parts: tuple[str, str] | None = None
) -> str:
    """What `reverse()` answers for image `index` of job `job_id`, put together from the
    parts it answered once (a list page signs two links an image: reverse() was a fifth of
    its time). `parts`: `_path_parts(thumbnail=...)` read already (for a job's images)."""
    head, tail = parts or _path_parts(thumbnail=thumbnail)
    return f"{head}{job_id}/images/{index}{tail}"


def _path_parts(*, thumbnail: bool) -> tuple[str, str]:
    """`_image_path_parts` for this context's script prefix and URL conf (context-local
    reads, so a job's links read them once per kind, not once per link)."""
    return _image_path_parts(
        get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF, thumbnail=thumbnail
    )


# A job id no job has (the path converter is `str`): the URL of an image of it, split at
# it, gives the parts around every image's id and index.
_JOB_PLACEHOLDER = "job-id-placeholder"


@functools.lru_cache(maxsize=64)
def _image_path_parts(prefix: str, urlconf: str, *, thumbnail: bool) -> tuple[str, str]:
    """(what comes before the job id, what comes after its index) in the path of an image
    (or its thumbnail), for this script prefix and URL conf."""
    name = "job-image-thumbnail" if thumbnail else "job-image"
    path = reverse(name, urlconf=urlconf, kwargs={"job_id": _JOB_PLACEHOLDER, "index": 0})
    head, found, tail = path.partition(f"{_JOB_PLACEHOLDER}/images/0")
    if not found:
        raise ImproperlyConfigured(f"An image's path has an unexpected shape: {path}")
    return head, tail


def signed_image_url(image: JobImage, *, thumbnail: bool = False) -> str:
    """A link to `image` (or its thumbnail) that opens without an API key until it expires
    (MOBILESD_SIGNED_LINK_SECONDS, rounded up to a window so that the same image's link
    stays the same URL for a while: core_app.signed_links.LinkSigner)."""
    return public_link(image_link_signer().sign(image_path(image, thumbnail=thumbnail)))


def job_image_names(job: Job) -> dict[int, str]:
    """Index -> file name of `job`'s images, from `result_details.images`: their names in
    index order, which the engine writes in the transaction that stores their JobImage rows
    (queue_app.dispatch.job_complete), so that reading them needs no image row."""
    names = (job.result_details or {}).get("images")
    if not isinstance(names, list):
        return {}
    return {index: file_name(name) for index, name in enumerate(names) if isinstance(name, str)}


def file_name(path: str) -> str:
    """PurePosixPath(path).name, without building a path for the usual one ("x/y.png"): a
    list page names a hundred images, and the path object was half of their links' cost."""
    tail = path.rpartition("/")[2]
    return tail if tail and tail != "." else PurePosixPath(path).name


def job_image_links(job: Job) -> list[dict[str, Any]]:
    """[{"index", "name", "url", "thumbnail_url"}] of `job`'s images, signed, in index
    order; [] when it has none (`job_image_names`: a status read or a list page reads no
    image rows)."""
    names = job_image_names(job)
    if not names:
        return []
    signer = image_link_signer()
    expiry = signer.expiry()  # one for all of them: they are made together
    image, thumbnail = _path_parts(thumbnail=False), _path_parts(thumbnail=True)
    return [
        {
            "index": index,
            "name": name,
            "url": public_link(
                signer.sign(_path_of(job.pk, index, thumbnail=False, parts=image), expiry=expiry)
            ),
            "thumbnail_url": public_link(
                signer.sign(_path_of(job.pk, index, thumbnail=True, parts=thumbnail), expiry=expiry)
            ),
        }
        for index, name in names.items()
    ]


def job_has_image_links(job: Job) -> bool:
    """Whether a job's answer lists image links: completed jobs only have images."""
    return job.status == JobStatus.COMPLETED


def signed_link_present(request: Request) -> bool:
    """Whether the request asks to be let in by a signed link (it carries `exp` or `sig`)."""
    query = request.query_params
    return EXPIRY_PARAMETER in query or SIGNATURE_PARAMETER in query


def signed_link_check(request: Request) -> None:
    """Nothing when the request's `exp` and `sig` sign its path; InvalidSignature (403)
    otherwise. The path is request.path, script prefix included, as reverse() writes it."""
    query = request.query_params
    image_link_signer().check(
        request.path, query.get(EXPIRY_PARAMETER, ""), query.get(SIGNATURE_PARAMETER, "")
    )
