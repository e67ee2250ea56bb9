"""Hugging Face Hub references resolved to files in the local hub cache, through ``huggingface_hub``.

A ``weights:`` value (``SegmentationTask``, :func:`hrseg.load_pretrained`, configs) and the model argument of
:meth:`hrseg.Segmenter.from_pretrained` may name a hub repository instead of a local path:

- ``timm/hrnet_w48.ms_in1k`` or ``hf-hub:timm/hrnet_w48.ms_in1k``: timm's ImageNet HRNet weights (their key
  names are hrseg's backbone names; the classification head is dropped);
- ``hf-hub:org/name@v1.0`` (``@`` pins a branch, tag or commit);
- an hrseg model repository: ``config.json`` + ``model.safetensors`` + ``README.md``
  (:mod:`hrseg.hub.folder`).

An existing local file or folder always wins; a value without the ``hf-hub:`` prefix counts as a hub
reference only when it looks like ``<org>/<name>`` with no weights-file suffix (``.pth``, ``.ckpt``, ...).

Files go through ``hf_hub_download``: its cache (``HF_HUB_CACHE``), no second download, ``HF_HUB_OFFLINE=1``
to never touch the network; both variables are read at each call, so they may be set after import. Errors
name the reference and say how to work offline.

Dependencies run one way: this module imports :mod:`hrseg.checkpoint` (error types) and no other hrseg
module; :mod:`hrseg.hub.folder` builds on it, never the reverse. Loaders above (:func:`hrseg.load_pretrained`)
turn a weights reference into a cached file here (:func:`resolve_weights`), then read it with
:mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hrseg._version import __version__
from hrseg.checkpoint import CheckpointError, CheckpointNotFoundError

__all__ = [
    "HUB_PREFIX",
    "WEIGHT_FILES",
    "HubError",
    "HubFile",
    "HubNotFoundError",
    "HubReference",
    "as_reference",
    "hub_cache_dir",
    "hub_error",
    "hub_offline",
    "parse_reference",
    "resolve_file",
    "resolve_weights",
]

HUB_PREFIX = "hf-hub:"
#: Weight files tried in a repository, in order (timm publishes both; hrseg folders hold the first).
WEIGHT_FILES = (SAFETENSORS_SINGLE_FILE, "pytorch_model.bin")
# Suffixes that make "<dir>/<file>" a local path even when it looks like "<org>/<name>".
_LOCAL_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".json", ".onnx", ".pt2", ".tar", ".pkl"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class HubError(CheckpointError):
    """A hub reference that cannot be resolved or published; the message names it and says what to do."""


class HubNotFoundError(HubError, CheckpointNotFoundError):
    """The referenced file is neither in the local cache nor reachable (also a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class HubReference:
    """A repository on the hub, optionally pinned to a revision (branch, tag or commit)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HubFile:
    """A file resolved from the hub: where it came from and where it lies in the cache.

    Attributes:
        repo_id: the repository.
        revision: the requested revision (``None``: the default branch).
        commit: the commit the cache holds it for (from the snapshot folder; ``""`` if unknown).
        filename: the file inside the repository.
        path: the local (cached) file.
    """

    repo_id: str
    revision: str | None
    commit: str
    filename: str
    path: Path

    def describe(self) -> str:
        """``hf-hub:<repo>@<revision> (commit <sha>) file <name>``, for load reports and logs."""
        text = f"{HUB_PREFIX}{self.repo_id}@{self.revision or 'main'}"
        if self.commit and self.commit != self.revision:
            text += f" (commit {self.commit[:12]})"
        return f"{text} file {self.filename}"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether hub access is off (``HF_HUB_OFFLINE``, read now or when huggingface_hub was imported)."""
    if _env_true("HF_HUB_OFFLINE"):
        return True
    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The hub cache in use: ``HF_HUB_CACHE`` if set now, else huggingface_hub's default."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(constants.HF_HUB_CACHE)


def parse_reference(ref: str | Path) -> HubReference | None:
    """The hub reference ``ref`` names, or ``None`` for a local path.

    ``hf-hub:<org>/<name>[@revision]`` is always a reference; ``<org>/<name>[@revision]`` is one unless a
    local file or folder of that name exists or the name ends in a weights-file suffix (``.pth``, ``.ckpt``,
    ``.safetensors``, ...).

    Raises:
        HubError: an ``hf-hub:`` value that is not ``<org>/<name>[@revision]``.
    """
    text = str(ref).strip()
    explicit = text.startswith(HUB_PREFIX)
    if explicit:
        text = text[len(HUB_PREFIX) :]
    elif Path(text).expanduser().exists():
        return None
    repo, at, revision = text.partition("@")
    valid = bool(_REPO_ID.match(repo)) and (not at or bool(revision.strip()))
    if not explicit and (not valid or Path(repo).suffix.lower() in _LOCAL_SUFFIXES):
        return None
    if not valid:
        raise HubError(f"invalid hub reference {str(ref)!r}: expected {HUB_PREFIX}<org>/<name>[@revision]")
    return HubReference(repo, revision.strip() or None)


def _offline_help(ref: HubReference, filenames: tuple[str, ...], local_hint: str) -> str:
    pin = f" --revision {ref.revision}" if ref.revision else ""
    files = " ".join(filenames)
    return (
        f"To work offline, download it once where the hub is reachable and use (or copy) that cache: "
        f"`hf download {ref.repo_id} {files}{pin}` (huggingface_hub < 0.34: `huggingface-cli download "
        f"{ref.repo_id} {files}{pin}`), then run with HF_HUB_OFFLINE=1 (HF_HUB_CACHE={hub_cache_dir()}); "
        f"or give a local path instead: {local_hint}."
    )


def _commit_of(path: Path, filename: str) -> str:
    """The commit of a cached file: its ``snapshots/<commit>/`` folder (``""`` outside the cache layout)."""
    depth = len(Path(filename).parts)
    snapshot = path.parents[depth - 1] if depth <= len(path.parents) else path.parent
    return snapshot.name if snapshot.parent.name == "snapshots" else ""


def _download(ref: HubReference, filename: str) -> HubFile:
    """``hf_hub_download`` one file (cache first; offline when ``HF_HUB_OFFLINE``); library errors pass."""
    env_cache = os.environ.get("HF_HUB_CACHE")
    path = hf_hub_download(
        ref.repo_id,
        filename,
        revision=ref.revision,
        cache_dir=env_cache or None,
        local_files_only=hub_offline(),
        library_name="hrseg",
        library_version=__version__,
    )
    local = Path(str(path))
    return HubFile(ref.repo_id, ref.revision, _commit_of(local, filename), filename, local)


def hub_error(
    err: Exception, ref: HubReference, candidates: tuple[str, ...], what: str, local_hint: str, original: str
) -> HubError | None:
    """The hrseg error for a ``huggingface_hub`` download error (``None``: not a hub error, let it pass).

    Every hub download in hrseg (here and in :mod:`hrseg.hub.folder`, whose ``ModelHubMixin`` downloads
    ``config.json`` itself) reports its failures through this one translation, so they all name the reference
    and say how to work offline.

    Args:
        err: what ``huggingface_hub`` raised.
        ref: the reference being resolved.
        candidates: the files looked for, in order (the first goes into the offline download command).
        what: what the files are, for the message (``"hub weights"``, ``"hrseg model"``).
        local_hint: the local alternative, for the message (``"weights: /path/to/model.safetensors"``).
        original: the user's spelling of the reference (a bare ``org/name`` gets a note that it was read as
            a hub reference because no such local path exists).
    """
    if isinstance(err, LocalEntryNotFoundError):  # offline, or the hub unreachable, and not in the cache
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
        return HubNotFoundError(
            f"{what} {ref} ({' or '.join(candidates)}) is not in the local Hugging Face cache "
            f"({hub_cache_dir()}) and {reason}. {_local_note(original)}"
            + _offline_help(ref, candidates[:1], local_hint)
        )
    if isinstance(err, EntryNotFoundError):  # the hub answered: the repository has no such file
        return HubNotFoundError(f"{what} {ref}: the repository holds none of {', '.join(candidates)}")
    if isinstance(err, RepositoryNotFoundError):
        return HubError(
            f"{what} {ref}: no such repository on the hub (or it is private / gated: log in with "
            f"`hf auth login`). {_local_note(original)}({type(err).__name__})"
        )
    if isinstance(err, RevisionNotFoundError):
        return HubError(f"{what} {ref}: the repository has no revision {ref.revision!r}")
    if isinstance(err, HfHubHTTPError):
        return HubError(f"{what} {ref}: the hub refused the download ({err})")
    return None


def resolve_file(
    ref: HubReference, candidates: tuple[str, ...], what: str, local_hint: str, original: str
) -> HubFile:
    """The first of ``candidates`` the repository has, cached, with errors that name ``ref`` and the way out.

    Cache first; a candidate missing from the cache (offline) does not stop the next one from being tried.

    Args:
        ref: the repository (and revision).
        candidates: file names to try, in order (``WEIGHT_FILES``; ``("config.json",)``).
        what: what the files are, for messages (see :func:`hub_error`).
        local_hint: the local alternative, for messages.
        original: the user's spelling of the reference, for messages.

    Raises:
        HubNotFoundError: none of ``candidates`` is cached and the hub is unreachable or off, or the
            repository holds none of them.
        HubError: no such repository or revision, or another hub error.
    """
    not_cached: LocalEntryNotFoundError | None = None
    for filename in candidates:
        try:
            return _download(ref, filename)
        except LocalEntryNotFoundError as err:  # another candidate may be cached
            not_cached = not_cached or err
        except EntryNotFoundError:  # (remote) the repository has no such file: try the next one
            continue
        except Exception as err:
            hub_err = hub_error(err, ref, candidates, what, local_hint, original)
            if hub_err is None:
                raise
            raise hub_err from err
    if not_cached is not None:
        raise hub_error(not_cached, ref, candidates, what, local_hint, original) or not_cached
    raise HubNotFoundError(f"{what} {ref}: the repository holds none of {', '.join(candidates)}")


def _local_note(original: str) -> str:
    text = original.strip()
    if text.startswith(HUB_PREFIX):
        return ""
    return f"(No local file or folder {text!r} exists either, so it was read as a hub reference.) "


def as_reference(ref: HubReference | str) -> HubReference:
    """``ref`` as a :class:`HubReference`: text is read as a hub reference even without ``hf-hub:``.

    For callers that already decided ``ref`` is no local path (unlike :func:`parse_reference`, which lets an
    existing file or folder win).

    Raises:
        HubError: text that is not ``[hf-hub:]<org>/<name>[@revision]``.
    """
    if isinstance(ref, HubReference):
        return ref
    parsed = parse_reference(ref if ref.startswith(HUB_PREFIX) else HUB_PREFIX + ref)
    assert parsed is not None  # an hf-hub: value parses or raises
    return parsed


def resolve_weights(ref: HubReference | str, original: str | None = None) -> HubFile:
    """The cached weights file of a hub repository (``model.safetensors``, else ``pytorch_model.bin``).

    Any repository qualifies (timm's ImageNet weights have no hrseg ``config.json``), so this is a plain
    ``hf_hub_download``, not :class:`~hrseg.hub.folder.ModelFolder`.

    Args:
        ref: a reference or its text (``timm/hrnet_w48.ms_in1k``, ``hf-hub:org/name@rev``).
        original: the user's spelling, for messages.

    Raises:
        HubNotFoundError: not cached and the hub is unreachable or off; the message says how to fix it.
        HubError: no such repository or revision, or another hub error.
    """
    original = original or str(ref)
    return resolve_file(
        as_reference(ref),
        WEIGHT_FILES,
        "hub weights",
        "weights: /path/to/model.safetensors (or an official .pth)",
        original,
    )
