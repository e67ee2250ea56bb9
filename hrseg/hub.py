"""Weights and models on the Hugging Face Hub: references, cached downloads, publishing.

A ``weights:`` value (``SegmentationTask``, :func:`hrseg.load_pretrained`, configs) and the model argument of
:meth:`hrseg.Segmenter.from_pretrained` may name a hub repository instead of a local path:

- ``timm/hrnet_w48.ms_in1k`` or ``hf-hub:timm/hrnet_w48.ms_in1k``: timm's ImageNet HRNet weights (their key
  names are hrseg's backbone names; the classification head is dropped);
- ``hf-hub:org/name@v1.0`` (``@`` pins a branch, tag or commit);
- an hrseg model repository: ``config.json`` + ``model.safetensors`` (what ``hrseg export --format hub``
  writes, the layout of ``huggingface_hub``'s ``ModelHubMixin``).

An existing local file or folder always wins; a value without the ``hf-hub:`` prefix counts as a hub
reference only when it looks like ``<org>/<name>`` with no weights-file suffix (``.pth``, ``.ckpt``, ...).

Files go through ``huggingface_hub.hf_hub_download``: its cache (``HF_HUB_CACHE``), no second download,
``HF_HUB_OFFLINE=1`` to never touch the network. Both variables are read at each call, so they may be set
after import. Errors name the reference and say how to work offline. This module imports only
:mod:`hrseg.checkpoint` (for its error types) and ``huggingface_hub`` (inside the functions).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrseg.checkpoint import CheckpointError, CheckpointNotFoundError

__all__ = [
    "BUNDLE_FILES",
    "HUB_PREFIX",
    "WEIGHT_FILES",
    "HubError",
    "HubFile",
    "HubNotFoundError",
    "HubReference",
    "hub_cache_dir",
    "hub_offline",
    "parse_reference",
    "push_to_hub",
    "resolve_bundle",
    "resolve_weights",
]

HUB_PREFIX = "hf-hub:"
#: Weight files tried in a repository, in order (timm publishes both; hrseg bundles the first).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: The files of an hrseg model repository (``ModelHubMixin`` layout).
BUNDLE_FILES = ("config.json", "model.safetensors")
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
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The hub cache in use: ``HF_HUB_CACHE`` if set now, else huggingface_hub's default."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

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
    from huggingface_hub import hf_hub_download

    from hrseg import __version__

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


def _resolve(
    ref: HubReference, candidates: tuple[str, ...], what: str, local_hint: str, original: str
) -> HubFile:
    """The first of ``candidates`` the repository has, with errors that name ``ref`` and the way out."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    not_cached: list[str] = []
    for filename in candidates:
        try:
            return _download(ref, filename)
        except LocalEntryNotFoundError:  # offline, or the hub unreachable, and not in the cache
            not_cached.append(filename)
        except EntryNotFoundError:  # the hub answered: the repository has no such file
            continue
        except RepositoryNotFoundError as err:
            raise HubError(
                f"{what} {ref}: no such repository on the hub (or it is private / gated: log in with "
                f"`hf auth login`). {_local_note(original)}({type(err).__name__})"
            ) from err
        except RevisionNotFoundError as err:
            raise HubError(f"{what} {ref}: the repository has no revision {ref.revision!r}") from err
        except HfHubHTTPError as err:
            raise HubError(f"{what} {ref}: the hub refused the download ({err})") from err
    if not_cached:
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
        raise HubNotFoundError(
            f"{what} {ref} ({' or '.join(candidates)}) is not in the local Hugging Face cache "
            f"({hub_cache_dir()}) and {reason}. {_local_note(original)}"
            + _offline_help(ref, candidates[:1], local_hint)
        )
    raise HubNotFoundError(f"{what} {ref}: the repository holds none of {', '.join(candidates)}")


def _local_note(original: str) -> str:
    text = original.strip()
    if text.startswith(HUB_PREFIX):
        return ""
    return f"(No local file or folder {text!r} exists either, so it was read as a hub reference.) "


def resolve_weights(ref: HubReference | str, original: str | None = None) -> HubFile:
    """The cached weights file of a hub repository (``model.safetensors``, else ``pytorch_model.bin``).

    Args:
        ref: a reference or its text (``timm/hrnet_w48.ms_in1k``, ``hf-hub:org/name@rev``).
        original: the user's spelling, for messages.

    Raises:
        HubNotFoundError: not cached and the hub is unreachable or off; the message says how to fix it.
        HubError: no such repository or revision, or another hub error.
    """
    if isinstance(ref, str):
        original = original or ref
        parsed = parse_reference(ref if ref.startswith(HUB_PREFIX) else HUB_PREFIX + ref)
        assert parsed is not None  # an hf-hub: value parses or raises
        ref = parsed
    return _resolve(
        ref,
        WEIGHT_FILES,
        "hub weights",
        "weights: /path/to/model.safetensors (or an official .pth)",
        original or str(ref),
    )


def resolve_bundle(ref: HubReference | str, original: str | None = None) -> HubFile:
    """Download (or find in the cache) an hrseg model repository; returns its ``model.safetensors``.

    The ``config.json`` lies beside it (``.path.parent`` is the snapshot folder, a bundle folder).

    Raises:
        HubNotFoundError: not cached and the hub is unreachable or off.
        HubError: the repository is not an hrseg model (e.g. timm weights: load those with
            :func:`hrseg.load_pretrained` into a model you build), or another hub error.
    """
    if isinstance(ref, str):
        original = original or ref
        parsed = parse_reference(ref if ref.startswith(HUB_PREFIX) else HUB_PREFIX + ref)
        assert parsed is not None
        ref = parsed
    text = original or str(ref)
    hint = "a folder holding config.json + model.safetensors"
    config = _resolve(ref, ("config.json",), "hrseg model", hint, text)
    try:
        data = json.loads(config.path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HubError(f"hrseg model {ref}: config.json is not valid JSON ({err})") from err
    if not isinstance(data, dict) or "model" not in data or "num_classes" not in data:
        keys = sorted(data) if isinstance(data, dict) else []
        kind = f" (a timm '{data.get('architecture')}' config?)" if "architecture" in keys else ""
        raise HubError(
            f"{ref} is not an hrseg model: its config.json has no 'model' / 'num_classes' (keys {keys[:8]})"
            f"{kind}. Weights of another library load into a model you build: "
            f"hrseg.load_pretrained(model, {str(ref)!r}) or `weights: {ref}`."
        )
    pinned = HubReference(ref.repo_id, config.commit or ref.revision)  # the same snapshot as config.json
    weights = _resolve(pinned, ("model.safetensors",), "hrseg model", hint, text)
    return HubFile(ref.repo_id, ref.revision, weights.commit, weights.filename, weights.path)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload hrseg model",
    create_pr: bool = False,
) -> str:
    """Publish a saved hrseg model folder (``hrseg export --format hub``) to a hub repository.

    Creates the repository if needed (``huggingface_hub.create_repo``) and uploads the folder in one commit
    (``huggingface_hub.upload_folder``). Log in first (``hf auth login``) or pass ``token``. Anyone can then
    ``hrseg.Segmenter.from_pretrained(repo_id)``.

    Args:
        folder: the model folder: ``config.json``, ``model.safetensors`` (and the model card ``README.md``).
        repo_id: ``<org or user>/<name>``.
        private: create the repository private (ignored when it exists).
        token: a hub token (default: the logged-in one).
        revision: branch to push to (default: the main branch).
        commit_message: the commit message.
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        The URL of the commit (or pull request).

    Raises:
        HubError: the folder is not an hrseg model folder.
    """
    root = Path(folder)
    missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
    if missing:
        raise HubError(
            f"{root} is not an hrseg model folder: {', '.join(missing)} missing "
            "(write one with `hrseg export --ckpt best.ckpt --format hub --out DIR`)"
        )
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo_id, private=private, token=token, exist_ok=True)
    info: Any = upload_folder(
        repo_id=repo_id,
        folder_path=str(root),
        revision=revision,
        token=token,
        commit_message=commit_message,
        create_pr=create_pr,
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
