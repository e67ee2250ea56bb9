"""Image inputs: list image files, open one naming it when it fails, and turn any image into a tensor.

The dataset readers (:mod:`hrseg.data.checks`) and the inference API (:class:`hrseg.Segmenter`, ``hrseg
predict``, ``hrseg export --check-image``) open files through :func:`open_image`, so a missing or corrupt
file gives the same message everywhere; ``hrseg predict``, the DataModules' ``predict_path`` and ``hrseg
export --calib-data`` expand folders and globs through :func:`list_images`. Depends on PIL, numpy and torch
only (``hrseg predict`` stays quick to start: no Lightning, no albumentations).

Orientation: every image is read as viewers display it. A file whose EXIF orientation tag says "rotate 90
degrees" (phone photos) is rotated (and mirrored, for the mirrored orientations) on reading, as OpenCV's
``imread``, which the official HRNet code reads with, and most tools do; :func:`upright` is the one place
that does it (files, PIL images given to the API, ``hrseg serve`` uploads). A label map therefore lines up
with the image as displayed, and a mask must be drawn on the displayed image (``hrseg data check`` reports a
mask that only fits the stored orientation).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from hrseg.files import atomic_output

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFileError",
    "ImageInput",
    "exif_orientation",
    "list_images",
    "open_image",
    "save_png",
    "to_image_tensor",
    "upright",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
"""File extensions read as images (case-insensitive)."""

ImageInput = str | Path | Image.Image | np.ndarray | Tensor
"""What :func:`to_image_tensor` (and so every ``Segmenter`` method) accepts."""


class ImageFileError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def save_png(image: Image.Image, path: Path, safe: str = "") -> None:
    """Write ``image`` as a PNG atomically: a crash or a full disk mid-write leaves no finished-looking file.

    The image goes to a hidden temporary file beside ``path`` first, renamed over it once complete (parent
    folders are created); a write the disk refuses raises :class:`hrseg.files.DiskWriteError` naming ``path``
    and ``safe`` (what the caller knows is safe, e.g. how to resume).
    """
    with atomic_output(path, safe) as tmp:
        image.save(tmp, format="PNG")


def list_images(spec: str | Path, recursive: bool = False) -> list[Path]:
    """Expand a folder, a glob pattern or one image file into sorted image paths.

    Args:
        spec: a folder (its image files; with ``recursive`` those of its sub-folders too), a glob pattern
            (``**`` matches sub-folders) or one image file.
        recursive: walk a folder's sub-folders.

    Raises:
        FileNotFoundError: ``spec`` is none of those, or holds no image (the message names it).
    """
    text = str(spec)
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True)]
    elif path.is_dir():
        candidates = list(path.rglob("*") if recursive else path.iterdir())
    elif path.is_file():
        return [path]
    else:
        raise FileNotFoundError(f"{text}: neither a folder, an image file nor a glob pattern")
    files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"{text}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an (opened) image: 1 (as stored, also when absent) to 8.

    2-8 mean the stored pixels must be mirrored and / or rotated to be displayed; 5-8 swap width and height.
    A malformed EXIF block counts as absent.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError):  # a broken EXIF block: the pixels as stored
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """``image`` as it is displayed: its EXIF orientation applied, the tag dropped; unchanged without one.

    Applying it twice changes nothing (the result carries no orientation tag).
    """
    if exif_orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image)


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, in its displayed orientation (:func:`upright`).

    Args:
        path: the file.

    Returns:
        The decoded image (its file handle is closed for single-frame formats), EXIF orientation applied.

    Raises:
        FileNotFoundError: no such file (the message names it).
        ImageFileError: the file is not a readable image, e.g. truncated or corrupt.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{p}: image file not found")
    img: Image.Image | None = None
    try:
        img = Image.open(p)
        img.load()
    except Image.DecompressionBombError as err:  # PIL reads PNG / JPEG whole: refuse before decoding
        raise ImageFileError(
            f"{p}: too big to read whole ({err}); streamed prediction reads it window by window: "
            "pip install hrseg[geo]"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # PIL's types for bad files
        if img is not None:
            img.close()  # a truncated file fails in load(), after open() took a handle
        raise ImageFileError(f"{p}: unreadable or corrupt image file ({err})") from None
    return upright(img)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """PIL image -> HxWxC float32 in [0, 1]; 16-bit greyscale keeps its range, alpha is dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        return (arr / (65535.0 if arr.max(initial=0) > 255 else 255.0))[..., None]
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None]
    if img.mode == "L":
        return np.asarray(img, dtype=np.float32)[..., None] / 255.0
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA/LA/P/CMYK/YCbCr...: alpha is dropped, palettes are expanded
    return np.asarray(img, dtype=np.float32) / 255.0


def _array_to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer or float numpy image -> float32 in [0, 1] with an explicit error for other ranges."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if out.size and (float(out.min()) < -1e-3 or float(out.max()) > 1.0 + 1e-3):
            raise ValueError(
                f"float images must hold values in [0, 1], got [{float(out.min()):.3g}, "
                f"{float(out.max()):.3g}]; pass uint8 or divide by 255"
            )
        return out
    raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")


def _to_channels(x: Tensor, in_channels: int) -> Tensor:
    """(B, c, H, W) with c in {1, 2, 3, 4} -> (B, in_channels, H, W): grey is replicated, alpha dropped."""
    c = x.shape[1]
    if c not in (1, 2, 3, 4):
        raise ValueError(f"images must have 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) channels, got {c}")
    if c in (2, 4):
        x = x[:, : c - 1]
        c -= 1
    if in_channels == 3 and c == 1:
        return x.expand(-1, 3, -1, -1)
    if in_channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    if c != in_channels:
        raise ValueError(f"the model takes {in_channels}-channel input, the image has {c} channels")
    return x


def to_image_tensor(image: ImageInput, in_channels: int = 3) -> tuple[Tensor, bool]:
    """Convert any supported image to a float ``(B, in_channels, H, W)`` tensor in [0, 1] (not normalized).

    Accepts a path or a PIL image (RGB, L, RGBA, P, 16-bit), both in their displayed orientation
    (:func:`upright`), a numpy array ``HxW`` / ``HxWxC`` (uint8, uint16 or
    float in [0, 1]) or a tensor ``HxW`` / ``CxHxW`` / ``BxCxHxW`` (uint8 or float in [0, 1]).

    Returns:
        The tensor and whether the input carried a batch dimension.
    """
    batched = False
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image):
        t = torch.from_numpy(np.ascontiguousarray(_pil_to_array(upright(image)))).permute(2, 0, 1)[None]
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(
                f"numpy images must be HxW or HxWxC with 1 to 4 channels, got shape {image.shape}"
            )
        t = torch.from_numpy(np.ascontiguousarray(_array_to_unit(image))).permute(2, 0, 1)[None]
    elif isinstance(image, Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            if t.shape[0] not in (1, 2, 3, 4) and t.shape[-1] in (1, 2, 3, 4):
                t = t.permute(2, 0, 1)  # HxWxC
            t = t[None]
        elif t.ndim == 4:
            batched = True
        else:
            raise ValueError(f"tensor images must be HxW, CxHxW or BxCxHxW, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            t = t.float()
            if t.numel() and (float(t.min()) < -1e-3 or float(t.max()) > 1.0 + 1e-3):
                raise ValueError(
                    f"float tensors must hold values in [0, 1], got [{float(t.min()):.3g}, "
                    f"{float(t.max()):.3g}]; pass uint8, divide by 255, or call hrseg.inference.infer with a "
                    "normalized tensor"
                )
        else:
            raise ValueError(f"unsupported tensor dtype {t.dtype}; use uint8 or float in [0, 1]")
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: use a path, PIL image, numpy array or tensor"
        )
    if min(t.shape[-2:]) < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    return _to_channels(t, in_channels), batched
