"""Where training runs: ``cpu``, ``cuda`` (or ``cuda:N``), or ``auto`` (a GPU when there is one)."""

from __future__ import annotations

import contextlib

import torch

from mobilelwt.errors import ConfigError


def resolve_device(name: str = "cpu") -> torch.device:
    """The torch device for ``name``; asking for a GPU that is not there is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Unknown device {name!r}.", "Use cpu, cuda, cuda:N or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but torch sees no CUDA GPU.", "Use --device cpu (or auto).")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"Device type {device.type!r} is not supported.", "Use cpu, cuda, cuda:N or auto.")
    if device.type == "cuda":
        # TF32 matmuls/convs: ~8x the fp32 rate on Ampere+ at an error far below layer-wise reconstruction error
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (full-network training and distillation); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
