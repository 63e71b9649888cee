"""Choosing the compute device: CUDA when there is a GPU, the CPU otherwise."""

from __future__ import annotations

import torch

from mother_core.errors import DeviceError
from mother_core.settings import DEVICES as DEVICE_CHOICES


def resolve_device(device: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a :class:`torch.device`.

    Raises
    ------
    DeviceError
        If CUDA is asked for but not available, or the name is unknown.
    """
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but no GPU is visible to PyTorch (torch.cuda.is_available() is False). "
                "Use --device cpu (or auto), or install a CUDA build of torch."
            )
        return torch.device(name)
    raise DeviceError(f"Unknown device {device!r}: use one of {', '.join(DEVICE_CHOICES)}.")


def describe_device(device: str = "auto") -> str:
    """A short human description, e.g. ``"CPU (2 threads)"`` or ``"CUDA: NVIDIA H100"``."""
    try:
        dev = resolve_device(device)
    except DeviceError as e:
        return f"unavailable ({e})"
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    return f"CPU ({torch.get_num_threads()} threads)"
