"""What a request may send: content types, body size, image formats and pixel counts, checked before decoding.

Every check raises :class:`RequestError` with the HTTP status it maps to and a one-line message, so the
server answers a bad request with a 4xx and keeps serving the others. Images are decoded in memory from the
request body (nothing is written to disk) with PIL restricted to PNG, JPEG and WebP; the pixel count is
read from the image header and refused before any pixel is decoded, which also stops decompression bombs (a
small file that declares a huge image). An image is turned as it is displayed (its EXIF orientation
applied, :func:`hrseg.images.upright`), so the label map lines up with what the client shows.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from hrseg.images import upright

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "IMAGE_FORMATS",
    "RequestError",
    "RequestLimits",
    "check_content_type",
    "decode_image",
]

#: Raw-body content types a ``POST /predict`` accepts (besides ``multipart/form-data``).
IMAGE_CONTENT_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp")

#: PIL formats the server decodes; anything else (BMP, TIFF, GIF, ...) is refused unread.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status, the message one line for the client.

    Args:
        status: 400 (not an image, truncated, empty), 413 (too large), 415 (content type or format).
        message: what is wrong, for the client.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestLimits:
    """Upper bounds on one request.

    Args:
        max_pixels: the most pixels (width x height) an image may declare; larger ones get 413 unread.
        max_body_bytes: the most bytes a request body may hold; larger bodies get 413.
    """

    max_pixels: int = 40_000_000
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")

    def check_length(self, length: int) -> None:
        """Refuse a body of ``length`` bytes over :attr:`max_body_bytes` (413)."""
        if length > self.max_body_bytes:
            raise RequestError(
                413, f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes"
            )


def check_content_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` header, if the server accepts it.

    Args:
        content_type: the header value, e.g. ``"image/png"`` or ``"multipart/form-data; boundary=..."``.

    Returns:
        The lower-case media type without parameters.

    Raises:
        RequestError: 415 for any other type (the message lists the accepted ones).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in (*IMAGE_CONTENT_TYPES, "multipart/form-data"):
        return media_type
    shown = media_type or "none"
    raise RequestError(
        415,
        f"unsupported content type {shown}: send the image as the body with Content-Type "
        f"{', '.join(IMAGE_CONTENT_TYPES)}, or as a multipart/form-data file",
    )


def decode_image(data: bytes, limits: RequestLimits) -> Image.Image:
    """Decode a PNG, JPEG or WebP image from memory within ``limits``.

    Args:
        data: the encoded image.
        limits: the pixel limit (and body size limit) to hold it to.

    Returns:
        The fully decoded image (the first frame of an animated one) in its displayed orientation.

    Raises:
        RequestError: 400 for an empty body, a body that is not an image, a truncated or corrupt image or a
            zero-size one; 413 for more pixels than ``limits.max_pixels``; 415 for another image format.
    """
    limits.check_length(len(data))
    if not data:
        raise RequestError(400, "empty request body: send a PNG, JPEG or WebP image")
    try:
        # PIL refuses images over 2 x MAX_IMAGE_PIXELS in open() and warns above it; the explicit pixel check
        # below is the server's limit, so the warning is not needed (and must not become an error elsewhere).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError as err:
        raise RequestError(413, f"image refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError:
        kind = _other_image_format(data)
        if kind is not None:
            raise RequestError(415, f"unsupported image format {kind}: send PNG, JPEG or WebP") from None
        raise RequestError(400, "the body is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for broken headers
        raise RequestError(400, f"corrupt image header ({_one_line(err)})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError(400, f"zero-size image ({width}x{height})")
    if width * height > limits.max_pixels:
        raise RequestError(
            413,
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, bad chunks, broken compression
        raise RequestError(400, f"truncated or corrupt {image.format} image ({_one_line(err)})") from None
    return upright(image)


def _other_image_format(data: bytes) -> str | None:
    """The name of an image format PIL reads but the server does not accept (for a 415), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                return str(other.format)
    except Exception:  # anything PIL cannot identify is simply not an image
        return None


def _one_line(err: BaseException) -> str:
    """An exception message on one line (PIL's may span several)."""
    return " ".join(str(err).split()) or type(err).__name__
