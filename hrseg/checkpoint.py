"""Read every checkpoint format hrseg meets, with one error type that names the file and the problem.

Formats:

- weights only (:func:`read_state_dict`): official HRNet segmentation and ImageNet ``.pth``, timm weights,
  plain state dicts, safetensors files, Lightning ``.ckpt``; :func:`hrseg.load_pretrained` matches their keys
  to a model;
- self-describing models (:func:`read_model_checkpoint`): a Lightning ``.ckpt`` of
  :class:`~hrseg.task.SegmentationTask` (hyper-parameters + ``model.*`` weights) or a safetensors bundle
  (``model.safetensors`` + ``config.json``, or the config in the safetensors header), giving
  :class:`ModelMeta` and the network's state dict;
- exported graphs (:func:`read_exported`): ``hrseg export`` ``.onnx``, ``.pt2`` (a ``torch.export`` program)
  and OpenVINO IR ``.xml``, described as an :class:`ExportedGraph` with the :class:`ModelMeta` embedded at
  export. Sessions are not created here: :mod:`hrseg.inference.runtime` runs what this module reads.

Everything is read on the CPU with ``weights_only=True`` unless the caller passes ``trusted=True``: pickles
can run code. This module imports no other hrseg module except :mod:`hrseg.metadata`, so the model, inference
and command layers all read files through it.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import pickletools
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from hrseg.metadata import ModelMeta

__all__ = [
    "CONFIG_METADATA_KEY",
    "MAX_CONFIG_JSON_BYTES",
    "PRECISION_METADATA_KEY",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ExportedGraph",
    "import_openvino",
    "read_exported",
    "read_lightning_record",
    "read_model_checkpoint",
    "read_state_dict",
    "refused_globals",
]

CONFIG_METADATA_KEY = "hrseg_config"
"""Key under which exports embed the :class:`ModelMeta` JSON (safetensors header, ONNX metadata, .pt2)."""

PRECISION_METADATA_KEY = "hrseg_precision"
"""Key under which an exported graph records its precision (``"int8"``, OpenVINO ``"bf16"`` / ``"fp16"``)."""


MAX_CONFIG_JSON_BYTES = 16 << 20
"""The largest ``config.json`` of a model bundle read (a real one is a few KiB, a 65536-class one ~2 MiB)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file and what is wrong."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (also a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class ExportedGraph:
    """An ``hrseg export`` graph as read from disk (:func:`read_exported`).

    :func:`hrseg.inference.runtime.open_exported` runs it.

    Attributes:
        path: the file (``.onnx``, ``.pt2`` or OpenVINO ``.xml``).
        kind: ``"onnx"``, ``"pt2"`` or ``"openvino"``.
        meta: the embedded :class:`ModelMeta`.
        precision: the precision the export recorded (``"fp32"`` unless quantized or given an OpenVINO
            inference precision).
        graph: the loaded graph where reading needs it: the ``torch.export.ExportedProgram`` of a ``.pt2``,
            the ``openvino.Model`` of an IR; None for ONNX (ONNX Runtime reads the file).
    """

    path: Path
    kind: Literal["onnx", "pt2", "openvino"]
    meta: ModelMeta
    precision: str = "fp32"
    graph: Any = None


def _existing_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {p}")
    if p.is_file() and p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {p} is empty (corrupt or truncated download?)")
    return p


def _is_safetensors(path: Path) -> bool:
    """Recognise safetensors by extension or by its header (8-byte length then a JSON object)."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file."""
    from safetensors import safe_open

    tensors: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensors[key] = fh.get_tensor(key)
    except Exception as err:  # safetensors raises its own SafetensorError and OSError subclasses
        raise CheckpointError(f"cannot read safetensors file {path}: corrupt or truncated ({err})") from err
    return tensors, metadata


def read_lightning_record(path: str | Path) -> dict[str, Any]:
    """A Lightning ``.ckpt``'s top-level dict with its tensors memory-mapped, not read (``weights_only``).

    For what is beside the weights (``hyper_parameters``, ``epoch``, ``global_step``, callback states): a W48
    checkpoint with its optimiser state is close to a gigabyte, and none of it is needed for those.

    Raises:
        CheckpointError: not a readable weights-only checkpoint (the message names the file).
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a pre-zip file cannot be mapped (read whole); a damaged one: this names the problem
        data = _torch_load(Path(path), trusted=False)
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"checkpoint {path} is a {type(data).__name__}, not a Lightning checkpoint dict"
        )
    return dict(data)


def _torch_load(path: Path, trusted: bool) -> Any:
    """``torch.load`` on the CPU, ``weights_only`` unless trusted, with errors that name the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as err:
        # torch raises UnpicklingError, RuntimeError, EOFError ... for a refused or a damaged file; which
        # one it is comes from the file itself, not from the wording of torch's message
        if not trusted:
            refused = refused_globals(path)
            if refused:
                raise CheckpointError(_refusal(path, refused)) from err
        detail = (
            "" if isinstance(err, pickle.UnpicklingError) else f"{type(err).__name__}: {_first_line(err)}"
        )
        raise CheckpointError(_unreadable(path, detail)) from err


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def _refusal(path: Path, refused: Sequence[str]) -> str:
    """The one-line refusal: what the file holds, why it was not loaded, how to make a safe file of it."""
    shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
    return (
        f"refused checkpoint {path}: it holds pickled Python objects ({shown}) that weights-only loading "
        "refuses, so it was not loaded: loading it would run code. Only if you trust its source, convert it "
        f"once into a safe file: `hrseg export --ckpt_path {path} --format safetensors --trusted` (in "
        "Python: trusted=True), then use the .safetensors file"
    )


#: pickle opcodes that push a string (candidates for the module and name a STACK_GLOBAL pops)
_STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)


def _scan_globals(data: bytes) -> list[str] | None:
    """The ``module.name`` globals a pickle imports (GLOBAL and STACK_GLOBAL), read with :mod:`pickletools`.

    Nothing is executed: the opcodes are listed, not run. Returns None when the bytes are not a whole pickle
    (truncated, damaged, or not a pickle at all).
    """
    found: list[str] = []
    memo: dict[int, Any] = {}
    recent: list[Any] = []  # the values pushed last, for STACK_GLOBAL's two strings and for MEMOIZE
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                # protocol 2 (torch.save's) writes Python 2 names (__builtin__.eval): read as unpickling does
                module, _, attr = str(arg).partition(" ")
                if (module, attr) in _compat_pickle.NAME_MAPPING:
                    module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
                found.append(f"{module}.{attr}")
                recent.append(None)
            elif name == "STACK_GLOBAL":
                pushed = [v for v in recent[-2:] if isinstance(v, str)]  # the module and the name
                found.append(".".join(pushed) if len(pushed) == 2 else "?")
                recent.append(None)
            elif name in _STRING_OPCODES:
                recent.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = recent[-1] if recent else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(arg or 0)))
            elif name == "STOP":
                return list(dict.fromkeys(found))
            elif opcode.stack_after:  # pushes something else (FRAME, PROTO, MEMOIZE, POP push nothing)
                recent.append(None)
            del recent[:-2]
    except Exception:  # pickletools raises ValueError for unknown opcodes and truncated arguments
        return None
    return None  # no STOP: cut short


def _pickle_of(path: Path) -> bytes | None:
    """The object pickle of a torch file: ``data.pkl`` of a ``torch.save`` zip, else the file's own bytes.

    None when the zip is unreadable (truncated archives lose their central directory) or holds no data.pkl.
    """
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                return archive.read(names[0]) if names else None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return None
    with path.open("rb") as fh:
        return fh.read()


def refused_globals(path: str | Path) -> list[str]:
    """The globals in a torch file that ``weights_only`` loading refuses; empty when it refuses none.

    Read from the file with :mod:`pickletools` (nothing runs): the globals the object pickle imports (a
    ``torch.save`` zip's ``data.pkl``, or a bare pickle), less those :func:`torch.load` accepts with
    ``weights_only=True``. A damaged or truncated file has no whole pickle and gives an empty list: it is
    damaged, not refused.
    """
    p = Path(path)
    data = _pickle_of(p)
    found = _scan_globals(data) if data is not None else None
    if not found:
        return []
    unsafe = _torch_refuses(found)
    return [g for g in found if g in unsafe]


def _torch_refuses(names: Sequence[str]) -> set[str]:
    """Which of ``names`` weights-only loading refuses, in torch's own words.

    ``torch.serialization.get_unsafe_globals_in_checkpoint`` knows torch's allowlist and the globals a user
    allowed with ``add_safe_globals``, but reads only protocol-2 GLOBAL opcodes (a pickle of another protocol
    makes it fail): it is given a minimal archive that imports exactly ``names``.
    """
    body = b"\x80\x02" + b"".join(
        f"c{module}\n{attr}\n".encode() for module, _, attr in (n.rpartition(".") for n in names)
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", body + b".")
        archive.writestr("archive/version", b"3\n")
    buffer.seek(0)
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(buffer))
    except Exception:  # a name torch cannot even parse: none of them is known to be safe
        return set(names)


def _unreadable(path: Path, detail: str = "") -> str:
    """Say what the unreadable file is (zip archive, pickle, something else) and what was expected."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        what = "a corrupt or truncated torch.save zip archive"
    elif head.startswith(b"\x80"):
        what = "a corrupt or truncated pickle"
    else:
        what = "not a PyTorch checkpoint (corrupt or truncated, or another format: neither zip nor pickle)"
    return (
        f"cannot read checkpoint {path}: {what}; expected a file written by torch.save, Lightning or "
        f"safetensors{f' ({detail})' if detail else ''}"
    )


def read_state_dict(path: str | Path, trusted: bool = False) -> tuple[dict[str, Any], bool]:
    """Read a weights file into a dict; returns ``(object, is_safetensors)``.

    Args:
        path: ``.pth`` / ``.pt`` / ``.ckpt`` / ``.bin`` (torch pickle) or safetensors (by suffix or header).
        trusted: allow full pickle loading (``weights_only=False``) for files you trust.

    Returns:
        The file's top-level dict (a state dict or a wrapper holding one) and whether it was safetensors.

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointError: the file is empty, corrupt, truncated, not a dict, or holds Python objects that
            ``weights_only`` refuses.
    """
    p = _existing_file(path)
    if _is_safetensors(p):
        return dict(_read_safetensors(p)[0]), True
    obj = _torch_load(p, trusted)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {p} holds a {type(obj).__name__}, expected a dict of tensors")
    return dict(obj), False


def _strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read_lightning(path: Path, trusted: bool) -> tuple[ModelMeta, dict[str, Tensor]]:
    """A Lightning ``.ckpt`` of SegmentationTask, read without Lightning: hyper-parameters + ``model.*``."""
    ckpt = _torch_load(path, trusted)
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = ckpt.get("hyper_parameters") or {}
    if "model" not in hparams or "labels" not in hparams:
        raise CheckpointError(
            f"{path}: the checkpoint's hyper_parameters lack 'model' / 'labels' "
            f"(found {sorted(hparams)}); was it saved by hrseg's SegmentationTask?"
        )
    meta = _meta_from(hparams, path)
    state = _strip_prefix(ckpt["state_dict"], "model.")
    if not state:
        raise CheckpointError(f"{path}: no 'model.*' weights in the checkpoint's state_dict")
    return meta, state


def _meta_from(data: Mapping[str, Any], path: Path) -> ModelMeta:
    try:
        return ModelMeta.from_dict(data)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from err


def _read_bundle(path: Path) -> tuple[ModelMeta, dict[str, Tensor]]:
    """A safetensors bundle: the file (config embedded in its header and/or a sidecar JSON) or its folder."""
    if path.is_dir():
        weights, config = path / "model.safetensors", path / "config.json"
    elif path.suffix == ".json":
        config, weights = path, path.with_suffix(".safetensors")
    else:
        weights, config = path, path.with_suffix(".json")
    if not weights.is_file():
        raise CheckpointNotFoundError(f"bundle weights not found: {weights}")
    state, metadata = _read_safetensors(weights)
    try:
        if config.is_file():
            if config.stat().st_size > MAX_CONFIG_JSON_BYTES:  # a model config is a page of JSON
                raise CheckpointError(
                    f"{config}: a model config of {config.stat().st_size / 2**20:.1f} MiB (at most "
                    f"{MAX_CONFIG_JSON_BYTES >> 20} MiB): refused"
                )
            data = json.loads(config.read_text())
        elif CONFIG_METADATA_KEY in metadata:
            data = json.loads(metadata[CONFIG_METADATA_KEY])
        else:
            raise CheckpointError(
                f"{weights}: no model config: neither {config.name} next to it nor "
                f"'{CONFIG_METADATA_KEY}' in its header (plain weights load with hrseg.load_pretrained into "
                "a model you build)"
            )
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config}: the model config is not valid JSON ({err})") from err
    return _meta_from(data, weights), state


def read_model_checkpoint(path: str | Path, trusted: bool = False) -> tuple[ModelMeta, dict[str, Tensor]]:
    """Read a self-describing model: its :class:`ModelMeta` and the network's state dict (official keys).

    Args:
        path: ``*.ckpt`` (hrseg SegmentationTask), ``*.safetensors`` (+ ``*.json``), ``*.json``, or a bundle
            folder holding ``model.safetensors`` and ``config.json``. Local files only: a Hugging Face Hub
            reference (``org/name``) is turned into its cached folder first by the loader that accepts one
            (:func:`hrseg.hub.resolve_model_path`, called by :func:`hrseg.inference.load_checkpoint`).
        trusted: allow pickled Python objects in a ``.ckpt`` (only for files you trust).

    Raises:
        CheckpointNotFoundError: the path (or a bundle's weights) does not exist.
        CheckpointError: the file is unreadable or carries no usable model config.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir() or p.suffix in (".safetensors", ".json"):
        return _read_bundle(p)
    return _read_lightning(_existing_file(p), trusted)


def read_exported(path: str | Path) -> ExportedGraph:
    """Read an ``hrseg export`` graph and describe it: its kind, metadata, stored precision and the graph.

    ``.onnx`` files are described from their metadata (ONNX Runtime reads the file itself); ``.pt2`` files are
    loaded with ``torch.export.load``; OpenVINO IR ``.xml`` (+ ``.bin``) files with OpenVINO's reader. Nothing
    is compiled or run here: :mod:`hrseg.inference.runtime` turns the result into a model.

    Raises:
        CheckpointNotFoundError: the path does not exist.
        CheckpointError: not a file ``hrseg export`` wrote (no embedded config) or unreadable.
    """
    p = _existing_file(path)
    if p.suffix == ".onnx":
        return _read_onnx(p)
    if p.suffix == ".pt2":
        return _read_pt2(p)
    if p.suffix == ".xml":
        return _read_openvino(p)
    raise CheckpointError(f"{p}: not an exported graph (expected .onnx, .pt2 or OpenVINO .xml)")


def _read_openvino(path: Path) -> ExportedGraph:
    """An ``hrseg export --format openvino`` IR (.xml + .bin), its metadata in the IR's rt_info."""
    try:
        ov = import_openvino()
    except ImportError as err:
        raise CheckpointError(f"{path}: OpenVINO IR needs openvino (pip install 'hrseg[deploy]')") from err
    try:
        model = ov.Core().read_model(str(path))
    except Exception as err:  # OpenVINO raises RuntimeError subclasses for damaged IR
        raise CheckpointError(f"cannot read OpenVINO IR {path}: corrupt or truncated ({err})") from err
    if not model.has_rt_info([CONFIG_METADATA_KEY]):
        raise CheckpointError(f"{path}: no '{CONFIG_METADATA_KEY}' metadata (not exported by hrseg export)")
    meta = _meta_from(json.loads(model.get_rt_info([CONFIG_METADATA_KEY]).astype(str)), path)
    precision = "fp32"
    if model.has_rt_info([PRECISION_METADATA_KEY]):
        precision = model.get_rt_info([PRECISION_METADATA_KEY]).astype(str)
    return ExportedGraph(path, "openvino", meta, precision, model)


def import_openvino() -> Any:
    """``import openvino`` without its usage telemetry; hrseg imports OpenVINO only through this.

    Importing OpenVINO loads its model converter, which sends a usage event to Google Analytics from a forked
    process on every import unless the user opted out (``opt_in_out --opt_out``) or ``CI=true``. hrseg makes
    no network call the user did not ask for, so the first import runs with ``openvino_telemetry`` hidden:
    OpenVINO then uses its own no-op telemetry stub for the rest of the process. Nothing on disk changes.
    """
    import sys

    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError -> stub
        try:
            import openvino  # noqa: F401  (the first import, with the telemetry hidden)
        finally:
            del sys.modules["openvino_telemetry"]
    import openvino as ov

    return ov


def _read_onnx(path: Path) -> ExportedGraph:
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as err:  # onnx raises DecodeError and friends for damaged files
        raise CheckpointError(f"cannot read ONNX file {path}: corrupt or truncated ({err})") from err
    if CONFIG_METADATA_KEY not in props:
        raise CheckpointError(f"{path}: no '{CONFIG_METADATA_KEY}' metadata (not exported by hrseg export)")
    meta = _meta_from(json.loads(props[CONFIG_METADATA_KEY]), path)
    return ExportedGraph(path, "onnx", meta, props.get(PRECISION_METADATA_KEY, "fp32"))


def _read_pt2(path: Path) -> ExportedGraph:
    extra = {f"{CONFIG_METADATA_KEY}.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:  # zip / deserialisation errors of a damaged archive
        raise CheckpointError(f"cannot read .pt2 file {path}: corrupt or truncated ({err})") from err
    if not extra[f"{CONFIG_METADATA_KEY}.json"]:
        raise CheckpointError(f"{path}: no {CONFIG_METADATA_KEY}.json inside (not exported by hrseg export)")
    meta = _meta_from(json.loads(extra[f"{CONFIG_METADATA_KEY}.json"]), path)
    return ExportedGraph(path, "pt2", meta, "fp32", program)
