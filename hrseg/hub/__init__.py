"""hrseg models and weights on the Hugging Face Hub, through ``huggingface_hub``'s own classes.

A ``weights:`` value (``SegmentationTask``, :func:`hrseg.load_pretrained`, configs) and the model argument of
:meth:`hrseg.Segmenter.from_pretrained` may name a hub repository (``timm/hrnet_w48.ms_in1k``,
``hf-hub:org/name@v1.0``) instead of a local path; an existing local file or folder always wins.

One concern per module:

- :mod:`~hrseg.hub.references`: hub references to local files: :func:`parse_reference`,
  :class:`HubReference`, :func:`resolve_weights` (``hf_hub_download``, its cache ``HF_HUB_CACHE``,
  ``HF_HUB_OFFLINE``), :class:`HubFile` (where a file came from), :class:`HubError` /
  :class:`HubNotFoundError` (whose messages say how to work offline), and what ``folder`` builds on:
  :func:`~hrseg.hub.references.resolve_file` (any file of a repository, cache first),
  :func:`~hrseg.hub.references.hub_error` (a ``huggingface_hub`` error as hrseg's) and
  :func:`~hrseg.hub.references.as_reference`;
- :mod:`~hrseg.hub.folder`: the hrseg model folder (``config.json`` + ``model.safetensors`` + ``README.md``):
  :class:`ModelFolder` (a ``huggingface_hub.ModelHubMixin``), :func:`save_model_folder`,
  :func:`load_model_folder`, :func:`push_to_hub`, and :func:`resolve_model_path` (a reference to such a
  folder -> its cached snapshot, for :func:`hrseg.inference.load_checkpoint`).

Dependencies run one way: ``folder`` imports ``references``; both import :mod:`hrseg.checkpoint`, ``folder``
also :mod:`hrseg.modelcard`; none of those imports this package. Loaders above them
(:func:`hrseg.inference.load_checkpoint`, :func:`hrseg.load_pretrained`) turn a reference into a local path
here, then read it with :mod:`hrseg.checkpoint`.
"""

from __future__ import annotations

from hrseg.hub.folder import (
    BUNDLE_FILES,
    CARD_FILE,
    ModelFolder,
    load_model_folder,
    push_to_hub,
    resolve_bundle,
    resolve_model_path,
    save_model_folder,
)
from hrseg.hub.references import (
    HUB_PREFIX,
    WEIGHT_FILES,
    HubError,
    HubFile,
    HubNotFoundError,
    HubReference,
    hub_cache_dir,
    hub_offline,
    parse_reference,
    resolve_weights,
)

__all__ = [
    "BUNDLE_FILES",
    "CARD_FILE",
    "HUB_PREFIX",
    "WEIGHT_FILES",
    "HubError",
    "HubFile",
    "HubNotFoundError",
    "HubReference",
    "ModelFolder",
    "hub_cache_dir",
    "hub_offline",
    "load_model_folder",
    "parse_reference",
    "push_to_hub",
    "resolve_bundle",
    "resolve_model_path",
    "resolve_weights",
    "save_model_folder",
]
