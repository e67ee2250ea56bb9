"""The official list-file layout: one ``.lst`` file per split, one ``image [label]`` pair of paths per line.

The official HRNet code reads every dataset this way (``data/list/<dataset>/{train,val,test}.lst``; each line
holds an image path and a label path, relative to the data root, separated by white space; test lists may
hold the image only). :class:`~hrseg.data.datamodule.SegmentationDataModule` reads such lists in place of a
dataset's own file discovery (its ``list_files`` option); the dataset's label mapping still applies. Every
problem is reported as ``<list file>:<line>: <problem>``. docs/reference/datasets.md "List files".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from hrseg.data.checks import DEFAULT_ENCODING, DatasetError, Problem, Sample

__all__ = ["parse_list_spec", "read_list_file", "write_list_file"]


def _resolve(token: str, root: Path) -> Path:
    """A list entry's path: absolute as written, otherwise under the data root."""
    path = Path(token)
    return path if path.is_absolute() else root / path


def read_list_file(
    path: Path, root: Path, encoding: Callable[[Path], str] | None = None
) -> tuple[list[Sample], list[Problem]]:
    """Read one ``.lst`` file into samples, collecting every problem with its line number.

    Blank lines and ``#`` comments are skipped. A line with more than two fields, a listed file that does not
    exist, an image listed twice, and an image without label in a list whose other lines have one are
    problems; the lines that are fine still become samples.

    Args:
        path: the list file.
        root: the folder the relative paths of its lines are under (the data root).
        encoding: the ``label_specs`` key of a label path (for datasets whose label files differ in
            encoding); None: :data:`~hrseg.data.checks.DEFAULT_ENCODING`.

    Returns:
        (samples, problems); a sample's name is its image's file stem.

    Raises:
        DatasetError: the list file does not exist or cannot be read.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DatasetError(f"{path}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read list file ({exc})") from None
    samples: list[Sample] = []
    problems: list[Problem] = []
    first_line: dict[Path, int] = {}
    image_only: list[int] = []
    labelled_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            problems.append(
                Problem(where, f"malformed line: expected `image [label]`, got {len(fields)} fields")
            )
            continue
        image = _resolve(fields[0], root)
        mask = _resolve(fields[1], root) if len(fields) == 2 else None
        if image in first_line:
            problems.append(
                Problem(where, f"duplicate entry: {fields[0]} is already listed on line {first_line[image]}")
            )
            continue
        first_line[image] = number
        missing = [f"image {image}"] if not image.is_file() else []
        if mask is not None and not mask.is_file():
            missing.append(f"label {mask}")
        if missing:
            problems.append(Problem(where, " and ".join(missing) + " not found"))
            continue
        if mask is None:
            image_only.append(number)
        elif labelled_line is None:
            labelled_line = number
        key = encoding(mask) if encoding is not None and mask is not None else DEFAULT_ENCODING
        samples.append(Sample(image, mask, image.stem, key))
    if labelled_line is not None:
        for number in image_only:
            problems.append(
                Problem(f"{path}:{number}", f"image without label, while line {labelled_line} has a label")
            )
        samples = [s for s in samples if s.mask is not None]
    return samples, problems


def write_list_file(path: Path, root: Path, pairs: Iterable[tuple[Path, Path | None]]) -> Path:
    """Write an official-style list: one ``image label`` line per pair, paths relative to ``root``."""
    lines = []
    for image, mask in pairs:
        entry = [Path(image).relative_to(root).as_posix()]
        if mask is not None:
            entry.append(Path(mask).relative_to(root).as_posix())
        lines.append(" ".join(entry) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def parse_list_spec(text: str) -> dict[str, str]:
    """Parse ``split=path[,split=path...]`` (the command line's spelling of ``list_files``).

    Raises:
        ValueError: an item without ``=``, an empty split or path, or a split given twice.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        split, sep, value = item.partition("=")
        split, value = split.strip(), value.strip()
        if not sep or not split or not value:
            raise ValueError(f"expected split=path[,split=path...], got {text!r}")
        if split in out:
            raise ValueError(f"split {split!r} given twice in {text!r}")
        out[split] = value
    return out
