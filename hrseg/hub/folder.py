"""The hrseg model folder: ``config.json`` + ``model.safetensors`` + ``README.md``, local or on the hub.

The folder is what ``hrseg export --format hub`` writes and :meth:`hrseg.Segmenter.from_pretrained` loads:
``config.json`` (the :class:`~hrseg.checkpoint.ModelMeta`) + ``model.safetensors`` (official key names) +
``README.md`` (the model card, :mod:`hrseg.modelcard`). It is a :class:`ModelFolder`, a
``huggingface_hub.ModelHubMixin``: the mixin writes ``config.json`` and the card, downloads
(``from_pretrained``) and publishes (``push_to_hub``); hrseg adds only the weights file and the checks.
A hub reference to such a folder (``org/name``, ``hf-hub:org/name@rev``) becomes its cached snapshot here
(:func:`resolve_model_path`).

Dependencies run one way: this module imports :mod:`hrseg.hub.references` (references, the cached download,
the errors), :mod:`hrseg.checkpoint` (:class:`~hrseg.checkpoint.ModelMeta`, the bundle reader) and
:mod:`hrseg.modelcard`; none of them imports it. Loaders above (:func:`hrseg.inference.load_checkpoint`) turn
a reference into a local folder here, then read it with :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelHubMixin
from huggingface_hub.constants import CONFIG_NAME, SAFETENSORS_SINGLE_FILE
from torch import Tensor, nn

from hrseg.checkpoint import CONFIG_METADATA_KEY, read_model_checkpoint
from hrseg.files import atomic_output, save_safetensors
from hrseg.hub.references import (
    HubError,
    HubFile,
    HubReference,
    as_reference,
    hub_error,
    hub_offline,
    parse_reference,
    resolve_file,
)
from hrseg.metadata import ModelMeta
from hrseg.modelcard import model_card

__all__ = [
    "BUNDLE_FILES",
    "CARD_FILE",
    "ModelFolder",
    "load_model_folder",
    "push_to_hub",
    "resolve_bundle",
    "resolve_model_path",
    "save_model_folder",
]

#: The files of an hrseg model folder: huggingface_hub's names (``ModelHubMixin`` / ``PyTorchModelHubMixin``).
BUNDLE_FILES = (CONFIG_NAME, SAFETENSORS_SINGLE_FILE)
CARD_FILE = "README.md"
_FOLDER_HINT = "a folder holding config.json + model.safetensors"


def _meta_from_config(config: Any, source: str, ref: HubReference | None = None) -> ModelMeta:
    """The :class:`ModelMeta` of a ``config.json``, or an error that says what else the file may be."""
    if not isinstance(config, Mapping) or "model" not in config or "labels" not in config:
        keys = sorted(config) if isinstance(config, Mapping) else []
        kind = f" (a timm '{config.get('architecture')}' config?)" if "architecture" in keys else ""
        name = str(ref) if ref is not None else source
        raise HubError(
            f"{source} is not an hrseg model: its config.json has no 'model' / 'labels' "
            f"(keys {keys[:8]}){kind}. Weights of another library load into a model you build: "
            f"hrseg.load_pretrained(model, {name!r}) or `weights: {name}`."
        )
    try:
        return ModelMeta.from_dict(config)
    except (TypeError, ValueError) as err:
        raise HubError(f"{source}: invalid model config in config.json: {err}") from err


class ModelFolder(ModelHubMixin):
    """An hrseg model folder: ``config.json`` (the :class:`ModelMeta`), ``model.safetensors``, ``README.md``.

    ``huggingface_hub``'s :class:`~huggingface_hub.ModelHubMixin` does the folder work: ``save_pretrained``
    writes ``config.json`` from the metadata and the model card, ``from_pretrained`` finds a local folder or
    downloads a repository's ``config.json`` (cache first), ``push_to_hub`` creates the repository and uploads
    the folder in one commit. hrseg adds the weights file (safetensors, official key names, the metadata also
    in its header, so the weights file alone describes the model) and the checks.

    It holds files, not a network: build one with :func:`hrseg.inference.build_from_meta` and
    ``load_state_dict(folder.state_dict())``, or load a folder or reference with
    :meth:`hrseg.Segmenter.from_pretrained`.

    Attributes:
        meta: the model's metadata (``config.json``).
        path: the folder it was loaded from (a local folder or a hub cache snapshot); ``None`` when built from
            weights in memory.
        source: for a folder from the hub, where its weights came from (repository, revision, commit).
        card: the model card to write (``None``: the one :func:`hrseg.modelcard.model_card` makes from
            ``meta``).
    """

    def __init__(
        self,
        meta: ModelMeta,
        state_dict: Mapping[str, Tensor] | None = None,
        *,
        path: Path | None = None,
        source: HubFile | None = None,
        card: ModelCard | None = None,
    ) -> None:
        """Hold ``meta`` and the weights: ``state_dict`` in memory, or the folder ``path`` that has them."""
        if (state_dict is None) == (path is None):
            raise ValueError("a ModelFolder needs either state_dict or path (the folder holding the weights)")
        self.meta = meta
        self.path = path
        self.source = source
        self.card = card
        self._state = None if state_dict is None else dict(state_dict)
        # config.json is the ModelMeta's JSON (the mixin writes a dict config sorted and indented, as to_json)
        self._hub_mixin_config = meta.to_dict()

    def state_dict(self) -> dict[str, Tensor]:
        """The network's weights (official key names), read from the folder when not held in memory."""
        if self._state is not None:
            return dict(self._state)
        assert self.path is not None
        return read_model_checkpoint(self.path)[1]

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors``; a loaded folder's files are copied as they are (also config, card)."""
        if self.path is not None:
            for name in (*BUNDLE_FILES, CARD_FILE):
                src = self.path / name
                if src.is_file() and src.resolve() != (save_directory / name).resolve():
                    shutil.copyfile(src, save_directory / name)
            return
        assert self._state is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self._state.items()}
        # The header copy of the config lets a lone model.safetensors describe itself (see _read_bundle)
        metadata = {CONFIG_METADATA_KEY: self.meta.to_json(), "format": "pt"}
        save_safetensors(state, save_directory / SAFETENSORS_SINGLE_FILE, metadata=metadata)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The card ``save_pretrained`` / ``push_to_hub`` write when the folder has none: :attr:`card`."""
        return self.card if self.card is not None else model_card(self.meta)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: Mapping[str, Any] | None = None,
        **model_kwargs: Any,
    ) -> ModelFolder:
        """The folder (``model_id`` a local folder) or the cached snapshot of a repository; see the mixin.

        ``config`` is the ``config.json`` the mixin read (``None`` when it found none: the precise reason is
        looked up here). Hub files are resolved through :func:`hf_hub_download` (``HF_HUB_CACHE``,
        ``HF_HUB_OFFLINE``); weights come from the same commit as ``config.json``.
        """
        folder = Path(model_id)
        if folder.is_dir():
            missing = [name for name in BUNDLE_FILES if not (folder / name).is_file()]
            if missing:
                raise HubError(
                    f"{folder} is not an hrseg model folder: {', '.join(missing)} missing "
                    "(write one with `hrseg export --ckpt_path best.ckpt --format hub --output DIR`)"
                )
            meta = _meta_from_config(config, str(folder / CONFIG_NAME))
            card_path = folder / CARD_FILE
            card = ModelCard.load(card_path) if card_path.is_file() else None
            return cls(meta, path=folder, card=card)
        ref = HubReference(model_id, revision)
        original = model_kwargs.pop("original", None) or str(ref)
        # Already cached by the mixin; resolved again for its snapshot (commit) and for precise errors
        config_file = resolve_file(ref, (CONFIG_NAME,), "hrseg model", _FOLDER_HINT, original)
        if config is None:  # the mixin logs and goes on when config.json is absent; hrseg needs it
            try:
                config = json.loads(config_file.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise HubError(f"hrseg model {ref}: config.json is not valid JSON ({err})") from err
        meta = _meta_from_config(config, str(ref), ref)
        pinned = HubReference(ref.repo_id, config_file.commit or ref.revision)  # the snapshot of config.json
        weights = resolve_file(pinned, (SAFETENSORS_SINGLE_FILE,), "hrseg model", _FOLDER_HINT, original)
        source = HubFile(ref.repo_id, ref.revision, weights.commit, weights.filename, weights.path)
        return cls(meta, path=weights.path.parent, source=source)


def load_model_folder(ref: HubReference | str | Path, original: str | None = None) -> ModelFolder:
    """:meth:`ModelFolder.from_pretrained` for a local folder or a hub reference, with hrseg's errors.

    Args:
        ref: a model folder, or a reference (``org/name``, ``hf-hub:org/name@rev``, a :class:`HubReference`).
        original: the user's spelling, for messages.

    Raises:
        HubNotFoundError: not cached and the hub is unreachable or off; the message says how to fix it.
        HubError: not an hrseg model (e.g. timm weights: load those with :func:`hrseg.load_pretrained` into
            a model you build), no such repository or revision, or another hub error.
    """
    if not isinstance(ref, HubReference) and Path(ref).expanduser().is_dir():
        return ModelFolder.from_pretrained(Path(ref).expanduser())
    hub_ref = as_reference(str(ref) if not isinstance(ref, HubReference) else ref)
    text = original or str(ref)
    try:
        return ModelFolder.from_pretrained(
            hub_ref.repo_id,
            revision=hub_ref.revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            local_files_only=hub_offline(),
            original=text,
        )
    except HubError:
        raise
    except Exception as err:  # the mixin's own config.json download
        hub_err = hub_error(err, hub_ref, (CONFIG_NAME,), "hrseg model", _FOLDER_HINT, text)
        if hub_err is None:
            raise
        raise hub_err from err


def resolve_bundle(ref: HubReference | str, original: str | None = None) -> HubFile:
    """The cached ``model.safetensors`` of an hrseg model repository (``config.json`` lies beside it).

    Raises:
        HubNotFoundError: not cached and the hub is unreachable or off.
        HubError: the repository is not an hrseg model, or another hub error.
    """
    folder = load_model_folder(as_reference(ref), original=original or str(ref))
    assert folder.source is not None  # a hub reference records where its weights came from
    return folder.source


def resolve_model_path(path: str | Path) -> Path:
    """A checkpoint argument as a local path: a hub reference becomes its cached model folder.

    The one place where loaders (:func:`hrseg.inference.load_checkpoint`) turn ``org/name`` /
    ``hf-hub:org/name@rev`` into files, before :mod:`hrseg.checkpoint` reads them. A local path (an existing
    one always wins, see :func:`parse_reference`) comes back as it is, ``~`` expanded.

    Raises:
        HubNotFoundError: a reference that is not cached while the hub is unreachable or off.
        HubError: a reference to something that is not an hrseg model, or another hub error.
    """
    ref = parse_reference(path)
    if ref is None:
        return Path(path).expanduser()
    return resolve_bundle(ref, original=str(path)).path.parent


def save_model_folder(
    model: nn.Module | Mapping[str, Tensor],
    meta: ModelMeta,
    folder: str | Path,
    card: ModelCard | None = None,
) -> list[Path]:
    """Write an hrseg model folder (``hrseg export --format hub``): weights, ``config.json``, model card.

    Args:
        model: the network, or its state dict (official key names; saved as fp32 as they are).
        meta: its metadata (becomes ``config.json``).
        folder: the output folder (created; files of the same names are replaced).
        card: the model card (default: :func:`hrseg.modelcard.model_card` of ``meta``).

    Returns:
        The written ``model.safetensors``, ``config.json`` and ``README.md``.
    """
    root = Path(folder)
    if root.suffix == ".safetensors":
        raise HubError(f"an hrseg model folder is a folder, not a file: {root}")
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # written into a fresh temporary folder (so the mixin writes this export's card, not keeping an old one)
    # and moved into place whole: a full disk leaves the earlier files, never a partial model.safetensors
    with atomic_output(root, "no partial file was left in the folder; rerun once there is room") as tmp:
        ModelFolder(meta, state, card=card).save_pretrained(tmp)
    return [root / SAFETENSORS_SINGLE_FILE, root / CONFIG_NAME, root / CARD_FILE]


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

    :meth:`ModelFolder.push_to_hub`: creates the repository if needed and uploads the folder's
    ``config.json``, ``model.safetensors`` and ``README.md`` as they are, in one commit. Log in first
    (``hf auth login``) or pass ``token``. Anyone can then ``hrseg.Segmenter.from_pretrained(repo_id)``.

    Args:
        folder: the model folder.
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
    if not root.is_dir():
        raise HubError(f"{root} is not an hrseg model folder: no such folder")
    model = load_model_folder(root)
    info: Any = model.push_to_hub(
        repo_id,
        private=private,
        token=token,
        branch=revision,
        commit_message=commit_message,
        create_pr=create_pr,
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
