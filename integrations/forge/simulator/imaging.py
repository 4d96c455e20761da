"""Cheap but real images: a seed-coloured gradient carrying the infotext, and the live
previews of it forming (from the seed's noise towards that gradient, step by step)."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageOps, PngImagePlugin, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096


class InvalidImageError(ValueError):
    """The payload is not a decodable image."""


def output_size(width: int, height: int) -> tuple[int, int]:
    """Decoded latents are 1/8 of the image: sizes round down to a multiple of 8 (min 8)."""
    return max(8, width // 8 * 8), max(8, height // 8 * 8)


def _final_image(width: int, height: int, seed: int, *, partial: bool = False) -> Image.Image:
    rng = random.Random(seed)  # noqa: S311 (colours, not secrets)
    low = tuple(rng.randrange(256) for _ in range(3))
    high = tuple(rng.randrange(256) for _ in range(3))
    if partial:
        low = tuple(c // 3 for c in low)
        high = tuple(c // 3 for c in high)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = ImageOps.colorize(gradient, low, high)
    ImageDraw.Draw(image).text((8, 8), f"seed {seed}", fill=(255, 255, 255))
    return image


def render_png(
    width: int, height: int, seed: int, infotext: str, *, partial: bool = False
) -> bytes:
    """A `width`x`height` PNG whose colours derive from `seed`, with a `parameters` text chunk.

    Partial (interrupted or skipped) images are rendered darker, like a half-denoised latent.
    """
    image = _final_image(width, height, seed, partial=partial)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@dataclass(frozen=True)
class Latent:
    """`shared.state.current_latent`, as far as a preview needs it: the batch being sampled
    (its seeds), the size it decodes to, and how far sampling has gone (0-1)."""

    seeds: tuple[int, ...]
    width: int
    height: int
    fraction: float


def _noise(width: int, height: int, seed: int) -> Image.Image:
    """The seed's starting noise, one random colour per latent pixel (8x8 image pixels)."""
    rng = random.Random(seed ^ 0x5EED)  # noqa: S311 (noise, not secrets)
    small = (max(1, width // 8), max(1, height // 8))
    pixels = rng.randbytes(small[0] * small[1] * 3)
    return Image.frombytes("RGB", small, pixels).resize((width, height), Image.Resampling.NEAREST)


def _grid(images: Sequence[Image.Image]) -> Image.Image:
    """The batch side by side, as `images.image_grid` lays it out (rows = round(sqrt(n)))."""
    rows = max(1, round(math.sqrt(len(images))))
    cols = math.ceil(len(images) / rows)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, (i % cols * width, i // cols * height))
    return grid


def render_preview(latent: Latent, *, grid: bool) -> Image.Image:
    """The live preview of `latent` (an approximate decode): each image of the batch blends
    from its noise towards the final image as sampling goes on; with `grid` (option
    `show_progress_grid`) the whole batch, else its first image."""
    seeds = latent.seeds if grid else latent.seeds[:1]
    fraction = min(max(latent.fraction, 0.0), 1.0)
    images = [
        Image.blend(
            _noise(latent.width, latent.height, seed),
            _final_image(latent.width, latent.height, seed),
            fraction,
        )
        for seed in seeds
    ]
    return _grid(images) if len(images) > 1 else images[0]


def encode_image(image: Image.Image, fmt: str) -> bytes:
    """`image` saved as `fmt` (png, jpeg or webp), as `/internal/progress` saves a preview:
    a small PNG optimised, a large one at compression level 1; JPEG without alpha."""
    fmt = fmt.lower()
    kwargs: dict[str, object] = {}
    if fmt == "png":
        kwargs = {"optimize": True} if max(image.size) <= 256 else {"compress_level": 1}
    elif fmt in ("jpeg", "jpg"):
        fmt = "jpeg"
        if image.mode == "RGBA":
            image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **kwargs)
    return buffer.getvalue()


@functools.cache
def warm_up() -> None:
    """Render an image and a live preview once in this process, as a server's start has
    its code ready before the first job. Pillow initialises much on first use (its PNG
    encoder, the default font): the first render of a process costs about five times the
    CPU of the next ones. A bench's 32 simulator processes, sharing the worker host's
    CPUs, would otherwise all pay it as their first jobs end, together (bench/README.md,
    "Many servers")."""
    render_png(64, 64, 0, "warm-up")
    encode_image(
        render_preview(Latent(seeds=(0,), width=64, height=64, fraction=0.5), grid=False), "png"
    )


def decode_image(payload: str) -> Image.Image:
    """Decode a base64 image or `data:image/...;base64,` URL (as the API's init images)."""
    if payload.startswith("data:image/"):
        payload = payload.split(";", 1)[-1].split(",", 1)[-1]
    try:
        raw = base64.b64decode(payload, validate=False)
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError) as exc:
        raise InvalidImageError(str(exc)) from exc
    return image


def read_png_text(payload: str) -> tuple[str, dict[str, str]]:
    """Return `(parameters text, other text chunks)` of a base64 image."""
    image = decode_image(payload)
    items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    return items.pop("parameters", ""), items


def decode_image_bytes(payload: str) -> bytes:
    """The raw bytes of a base64 image or `data:image/...;base64,` URL, as the server
    decodes them (what a test compares with what it sent)."""
    if payload.startswith("data:image/"):
        payload = payload.split(";", 1)[-1].split(",", 1)[-1]
    return base64.b64decode(payload, validate=False)


def _resized(image: Image.Image, width: int, height: int, resize_mode: int) -> Image.Image:
    """`image` brought to `width`x`height` as img2img's resize modes do: 1 crops to the
    aspect first, 2 fits inside and fills the rest from the edges; 0 and 3 just resize."""
    image = image.convert("RGB")
    if resize_mode == 1:
        return ImageOps.fit(image, (width, height))
    if resize_mode == 2:
        fitted = ImageOps.contain(image, (width, height))
        canvas = fitted.resize((width, height))  # the stretched edges fill the bands
        canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
        return canvas
    return image.resize((width, height))


def render_img2img_png(
    init: Image.Image,
    width: int,
    height: int,
    seed: int,
    infotext: str,
    *,
    denoising_strength: float,
    resize_mode: int = 0,
    mask: Image.Image | None = None,
    mask_invert: bool = False,
    partial: bool = False,
) -> bytes:
    """A PNG that visibly derives from `init`: the init image resized to the output, blended
    with the seed's gradient by `denoising_strength` (0 gives the init image back, 1 the
    gradient alone). With a `mask` (white: repaint) only the masked area changes; the rest
    keeps the init image's pixels."""
    base = _resized(init, width, height, resize_mode)
    noise = Image.open(io.BytesIO(render_png(width, height, seed, "", partial=partial)))
    strength = min(max(denoising_strength, 0.0), 1.0)
    image = Image.blend(base, noise.convert("RGB"), strength)
    if mask is not None:
        area = mask.convert("L").resize((width, height)).point(lambda v: 255 if v >= 128 else 0)
        if mask_invert:
            area = ImageOps.invert(area)
        image = Image.composite(image, base, area)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
