"""Dataset validation shared by the loaders and by ``hrseg data check``.

One code path decodes and validates a sample: the Dataset raises on the first bad sample (so training never
sees silently wrong labels), and the check command collects every problem of a split into a report. Messages
always name the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hrseg.images import IMAGE_EXTENSIONS, ImageFileError, exif_orientation, open_image
from hrseg.metadata import IGNORE_INDEX, LabelSet

#: the ``label_specs`` key of samples whose DataModule has a single mask encoding
DEFAULT_ENCODING = "default"


class DatasetError(ValueError):
    """A dataset is missing, incomplete or holds a bad file; the message names the path and the problem.

    It takes a single message argument so it survives the DataLoader worker re-raise unchanged.
    """


@dataclass(frozen=True)
class Sample:
    """One item of a split: an image, its mask, a display name and the key of its label encoding.

    Attributes:
        image: path of the image file.
        mask: path of the label map; None for unlabelled data.
        name: display name (file stem, used in predictions and messages).
        encoding: key into the DataModule's ``label_specs``, for DataModules whose splits mix encodings
            (e.g. Cityscapes labelIds / labelTrainIds).
    """

    image: Path
    mask: Path | None
    name: str
    encoding: str = DEFAULT_ENCODING


@dataclass(frozen=True)
class Problem:
    """One problem found while listing or scanning a split."""

    path: str
    message: str

    def __str__(self) -> str:
        """``path: message``, as printed in reports."""
        return f"{self.path}: {self.message}"


@dataclass
class LabelSpec:
    """How raw mask values become train ids, and which values are allowed.

    Attributes:
        num_classes: valid train ids are ``0 .. num_classes - 1``.
        ignore_index: the one extra value allowed (skipped by losses and metrics).
        lut: optional raw value -> train id table (e.g. Cityscapes labelIds); entries < 0 mark raw values
            that are not allowed at all.
        encoding: human-readable name of the raw encoding, used in messages.
        mat_key: the variable holding the label map in MATLAB ``.mat`` label files (COCO-Stuff 10k: ``S``);
            None: such files are refused.
    """

    num_classes: int
    ignore_index: int = IGNORE_INDEX
    lut: np.ndarray | None = None
    encoding: str = "train ids"
    mat_key: str | None = None

    @classmethod
    def of(cls, labels: LabelSet, raw_ids: bool = False, encoding: str = "train ids") -> LabelSpec:
        """The spec of a label set's files: train ids, or with ``raw_ids`` its raw id -> train id table."""
        lut = labels.lookup_table() if raw_ids else None
        return cls(labels.num_classes, labels.ignore_index, lut=lut, encoding=encoding)


def open_image_file(path: Path) -> Image.Image:
    """Open and fully decode an image file; raise DatasetError (naming it) when missing or corrupt."""
    try:
        return open_image(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except ImageFileError as exc:
        raise DatasetError(str(exc)) from None


def read_image(path: Path) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3), as displayed (EXIF orientation applied: :func:`open_image`).

    Grey, palette and RGBA images are converted to RGB.
    """
    img = open_image_file(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_mask(path: Path) -> np.ndarray:
    """Read a label mask as its stored integer values (H, W), never as colours.

    Palette ("P") PNGs give their indices, grey PNGs their values. An RGB mask is accepted only when its three
    channels are equal (a grey map saved as RGB); a colour-coded mask is refused because guessing the colour
    -> class mapping would silently produce wrong labels.
    """
    img = open_image_file(path)
    mode = img.mode
    if mode in ("P", "L", "1"):
        arr = np.asarray(img, dtype=np.uint8)
    elif mode in ("PA", "LA"):  # index / grey plus alpha: the first band holds the values
        arr = np.asarray(img, dtype=np.uint8)[..., 0]
    elif mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img).astype(np.int32)
    elif mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DatasetError(
                f"{path}: mask is a colour ({mode}) image; expected class indices "
                "(a palette 'P' or greyscale 'L' PNG whose pixel values are the class ids)"
            )
        arr = rgb[..., 0]
    else:
        raise DatasetError(f"{path}: unsupported mask mode {mode!r}; expected a palette or greyscale PNG")
    return np.array(arr, copy=True)


def read_mat_mask(path: Path, key: str | None) -> np.ndarray:
    """Read the integer label map stored as variable ``key`` of a MATLAB ``.mat`` file (via scipy.io).

    Raises:
        DatasetError: naming the file: missing, unreadable, no ``key`` variable, or not a 2-D integer map.
    """
    if key is None:
        raise DatasetError(f"{path}: .mat label files are not read for this dataset; expected a PNG mask")
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    from scipy.io import loadmat, whosmat  # imported here: only .mat datasets pay for it

    try:
        data = loadmat(str(path), variable_names=[key])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on a truncated or foreign file
        raise DatasetError(f"{path}: cannot read the .mat file ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(data.get(key, ()))
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        keys = sorted(name for name, _, _ in whosmat(str(path)))
        raise DatasetError(f"{path}: no 2-D integer {key!r} (keys: {keys})")
    return arr.astype(np.int32)


def map_labels(raw: np.ndarray, spec: LabelSpec) -> tuple[np.ndarray, list[int]]:
    """Map raw mask values to train ids and return the invalid raw values found (empty when all are valid).

    Returns:
        (mask, bad_values): uint8 mask when values fit (int32 otherwise), sorted list of offending raw values.
    """
    if spec.lut is not None:
        if raw.dtype != np.uint8:
            over = np.unique(raw[(raw < 0) | (raw >= len(spec.lut))])
            if over.size:
                return raw, [int(v) for v in over]
        mapped = spec.lut[raw]
        bad = mapped < 0
        bad_values = sorted(int(v) for v in np.unique(raw[bad])) if bad.any() else []
        mapped = np.where(bad, spec.ignore_index, mapped)
    else:
        mapped = raw
        bad = ((mapped < 0) | (mapped >= spec.num_classes)) & (mapped != spec.ignore_index)
        bad_values = sorted(int(v) for v in np.unique(mapped[bad])) if bad.any() else []
    if 0 <= spec.ignore_index <= 255 and spec.num_classes <= 256:
        out = mapped.astype(np.uint8)
    else:
        out = mapped.astype(np.int32)
    return out, bad_values


def _describe_allowed(spec: LabelSpec) -> str:
    if spec.lut is not None:
        ok = [i for i in range(len(spec.lut)) if spec.lut[i] >= 0]
        return f"allowed {spec.encoding} values: {_compact(ok)}"
    return f"allowed: 0..{spec.num_classes - 1} and {spec.ignore_index} (ignore)"


def _compact(values: Sequence[int]) -> str:
    """Format sorted integers as ranges, e.g. ``0..33, 255``."""
    parts: list[str] = []
    start: int | None = None
    prev = 0
    for v in values:
        if start is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(f"{start}..{prev}" if prev != start else f"{start}")
        start = prev = v
    if start is not None:
        parts.append(f"{start}..{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def inspect_sample(
    sample: Sample, spec: LabelSpec | None
) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
    """Decode and validate one sample, collecting every problem instead of stopping at the first.

    Args:
        sample: the image / mask paths.
        spec: label rules; None (or a sample without mask) reads the image only.

    Returns:
        (image RGB uint8 or None, mask of train ids or None, problems).
    """
    problems: list[Problem] = []
    image = mask = None
    try:
        image = read_image(sample.image)
    except DatasetError as exc:
        problems.append(Problem(str(sample.image), _strip_path(str(exc), sample.image)))
    if sample.mask is None or spec is None:
        return image, None, problems
    try:
        if sample.mask.suffix.lower() == ".mat":
            raw = read_mat_mask(sample.mask, spec.mat_key)
        else:
            raw = read_mask(sample.mask)
    except DatasetError as exc:
        problems.append(Problem(str(sample.mask), _strip_path(str(exc), sample.mask)))
        return image, None, problems
    if image is not None and image.shape[:2] != raw.shape[:2]:
        problems.append(_size_mismatch(sample, image.shape[:2], raw.shape[:2]))
    mask, bad_values = map_labels(raw, spec)
    if bad_values:
        shown = ", ".join(str(v) for v in bad_values[:20]) + (" ..." if len(bad_values) > 20 else "")
        count = int(np.isin(raw, bad_values).sum())
        problems.append(
            Problem(
                str(sample.mask),
                f"label values out of range: {shown} ({count} pixels) in {spec.encoding} mask; "
                f"{_describe_allowed(spec)}",
            )
        )
    return image, mask, problems


#: EXIF orientations that swap width and height, and what a viewer does to the stored pixels
_TURNS = {
    5: "mirrored and turned 270 degrees clockwise",
    6: "turned 90 degrees clockwise",
    7: "mirrored and turned 90 degrees clockwise",
    8: "turned 270 degrees clockwise",
}


def _size_mismatch(sample: Sample, shown: tuple[int, ...], mask: tuple[int, ...]) -> Problem:
    """The problem of a mask whose size is not its image's (as displayed); an EXIF rotation is named."""
    ih, iw = shown
    mh, mw = mask
    orientation = 1
    try:  # the header only: the pixels were read already
        with Image.open(sample.image) as stored:
            orientation = exif_orientation(stored)
    except (OSError, SyntaxError, ValueError):
        pass
    if orientation in _TURNS and (iw, ih) == (mh, mw):
        return Problem(
            str(sample.image),
            f"EXIF orientation {orientation}: the image is displayed (and read) {_TURNS[orientation]}, "
            f"as {ih}x{iw} (HxW), but its mask {sample.mask} is {mh}x{mw}, the size of the stored pixels; "
            "draw the mask on the image as displayed, or save the image's pixels turned and without the tag",
        )
    return Problem(
        str(sample.mask), f"size mismatch: mask is {mh}x{mw} (HxW) but its image {sample.image} is {ih}x{iw}"
    )


def _strip_path(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def load_sample(sample: Sample, spec: LabelSpec | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode and validate one sample; raise DatasetError naming the file(s) and every problem found."""
    image, mask, problems = inspect_sample(sample, spec)
    if problems:
        raise DatasetError(format_problems(problems, header=f"bad sample {sample.name!r}"))
    assert image is not None
    return image, mask


def format_problems(problems: Sequence[Problem], header: str | None = None, limit: int = 50) -> str:
    """Join problems into one message, one per line, truncated after ``limit``."""
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    body = "\n  ".join(lines)
    if header:
        return f"{header}:\n  {body}" if len(problems) > 1 else f"{header}: {body}"
    return body


def list_files(directory: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Return the sorted files of ``directory`` with one of ``extensions`` (case-insensitive)."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in exts)


def pair_folders(
    image_dir: Path, image_suffix: str, mask_dir: Path, mask_suffix: str
) -> tuple[list[Sample], list[Problem]]:
    """Pair ``image_dir/<stem><image_suffix>`` with ``mask_dir/<stem><mask_suffix>`` (ADE20K, COCO-Stuff).

    Returns:
        The pairs (named by stem, sorted) and a problem for every image without annotation and every
        annotation without image.
    """
    images = sorted(image_dir.glob(f"*{image_suffix}"))
    samples: list[Sample] = []
    problems: list[Problem] = []
    for image in images:
        mask = mask_dir / f"{image.stem}{mask_suffix}"
        if mask.is_file():
            samples.append(Sample(image, mask, image.stem))
        else:
            problems.append(Problem(str(image), f"missing annotation: expected {mask}"))
    stems = {p.stem for p in images}
    for mask in sorted(mask_dir.glob(f"*{mask_suffix}")):
        if mask.stem not in stems:
            expected = image_dir / f"{mask.stem}{image_suffix}"
            problems.append(Problem(str(mask), f"annotation without image: expected {expected}"))
    return samples, problems


def pair_listed(
    ids: Iterable[str], image_dir: Path, image_suffix: str, mask_dir: Path, mask_suffix: str, list_path: Path
) -> tuple[list[Sample], list[Problem]]:
    """Pair the ids of ``list_path`` as ``image_dir/<id><image_suffix>`` + ``mask_dir/<id><mask_suffix>``.

    Returns:
        The pairs (named by id, in list order) and a problem for every listed image or mask not found.
    """
    samples: list[Sample] = []
    problems: list[Problem] = []
    for image_id in ids:
        image, mask = image_dir / f"{image_id}{image_suffix}", mask_dir / f"{image_id}{mask_suffix}"
        if not image.is_file():
            problems.append(Problem(str(image), f"image listed in {list_path} not found"))
        elif not mask.is_file():
            problems.append(Problem(str(mask), f"missing label for {image} (listed in {list_path})"))
        else:
            samples.append(Sample(image, mask, image_id))
    return samples, problems


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise DatasetError naming the expected path."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} directory not found")
    return path


@dataclass
class CheckReport:
    """The result of scanning one split: problems, a per-class pixel histogram and counts."""

    split: str
    num_samples: int = 0
    num_labelled: int = 0
    problems: list[Problem] = field(default_factory=list)
    histogram: np.ndarray | None = None
    ignored_pixels: int = 0
    class_names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """Render the report as text: a summary, the problems, then the per-class histogram."""
        lines = [f"split {self.split!r}: {self.num_samples} samples ({self.num_labelled} with masks)"]
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines += [f"    {p}" for p in self.problems]
        else:
            lines.append("  no problems found")
        if self.histogram is not None and self.num_labelled:
            total = int(self.histogram.sum()) + self.ignored_pixels
            lines.append("  per-class pixel histogram:")
            width = max([len(n) for n in self.class_names] + [6])
            for i, count in enumerate(self.histogram):
                name = self.class_names[i] if i < len(self.class_names) else str(i)
                frac = 100.0 * count / total if total else 0.0
                lines.append(f"    {i:>3} {name:<{width}} {int(count):>12d} {frac:6.2f}%")
            frac = 100.0 * self.ignored_pixels / total if total else 0.0
            lines.append(f"    {'':>3} {'ignore':<{width}} {self.ignored_pixels:>12d} {frac:6.2f}%")
        return "\n".join(lines)


@dataclass
class ConversionReport:
    """The result of converting a dataset's distributed label files (``hrseg data convert``).

    Attributes:
        output: where the converted files went (shown to the user).
        written: files written.
        kept: outputs that existed already and were left as they are (no ``overwrite``).
        problems: every input file that could not be converted, each named; it left no output file.
    """

    output: str
    written: int = 0
    kept: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every input file was converted."""
        return not self.problems

    def format(self) -> str:
        """Render the report: a summary line, then one line per bad file."""
        lines = [f"{self.output}: {self.written} written, {self.kept} already there"]
        if self.problems:
            lines.append(f"  {len(self.problems)} file(s) not converted:")
            lines += [f"    {p}" for p in self.problems]
        return "\n".join(lines)


def check_samples(
    samples: Sequence[Sample],
    spec: LabelSpec | None,
    split: str,
    class_names: Sequence[str] = (),
    listing_problems: Sequence[Problem] = (),
    progress: bool = False,
) -> CheckReport:
    """Scan every sample of a split and collect all problems and the class histogram.

    Args:
        samples: the split's items.
        spec: label rules (None for unlabelled splits).
        split: name shown in the report.
        class_names: names for the histogram rows.
        listing_problems: problems already found while listing (missing pairs...), reported first.
        progress: show a tqdm progress bar.
    """
    report = CheckReport(split=split, class_names=list(class_names), problems=list(listing_problems))
    report.num_samples = len(samples)
    hist = np.zeros(spec.num_classes if spec else 0, dtype=np.int64)
    iterator: Iterable[Sample] = samples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc=f"checking {split}", unit="img")
    for sample in iterator:
        _, mask, problems = inspect_sample(sample, spec)
        report.problems += problems
        if mask is not None and spec is not None:
            report.num_labelled += 1
            flat = mask.reshape(-1).astype(np.int64)
            valid = (flat >= 0) & (flat < spec.num_classes)
            hist += np.bincount(flat[valid], minlength=spec.num_classes)[: spec.num_classes]
            report.ignored_pixels += int((flat == spec.ignore_index).sum())
    report.histogram = hist if spec is not None else None
    return report


__all__ = [
    "DEFAULT_ENCODING",
    "IMAGE_EXTENSIONS",
    "CheckReport",
    "ConversionReport",
    "DatasetError",
    "LabelSpec",
    "Problem",
    "Sample",
    "check_samples",
    "format_problems",
    "inspect_sample",
    "list_files",
    "load_sample",
    "map_labels",
    "open_image_file",
    "pair_folders",
    "pair_listed",
    "read_image",
    "read_mask",
    "read_mat_mask",
    "require_dir",
]
