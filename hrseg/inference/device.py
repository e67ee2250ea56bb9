"""Where inference runs: ``device="auto"`` picks CUDA when available, else MPS where it works, else CPU."""

from __future__ import annotations

import torch

__all__ = ["describe_device", "resolve_device"]


def _mps_works() -> bool:
    """MPS is built and answers a tiny op (it can be built but unusable, e.g. in some VMs)."""
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        return False
    try:
        torch.ones(1, device="mps").add_(1)
    except RuntimeError:
        return False
    return True


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """A concrete ``torch.device`` from ``"auto"`` / None (CUDA, else MPS, else CPU) or an explicit name.

    An explicit CUDA device on a machine without one fails here with one clear message rather than deep
    inside the first forward.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_works():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this torch sees no CUDA GPU (use auto or cpu)")
    return resolved


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` / ``cpu`` / ``mps``: what the commands print when they start."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
