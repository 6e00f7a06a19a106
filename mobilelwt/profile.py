"""Per-layer MACs, parameters and output shapes, from one shape-only forward pass.

MACs are multiply-accumulates of convolutions and linear layers, the convention of torchvision's published
GFLOPS figures; batch norm, activations and pooling count zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerStats:
    name: str
    type: str
    output_shape: tuple[int, ...]
    macs: int
    params: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one leaf module for a batch-1 ``output``."""
    per_sample = output.numel() // max(output.shape[0], 1)
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        return per_sample * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def profile_layers(model: nn.Module, input_size: int, *, in_channels: int = 3) -> list[LayerStats]:
    """One row per leaf module that runs in the forward pass of a square ``input_size`` image, in execution order."""
    return profile_module(model, (in_channels, input_size, input_size))


def count_macs(model: nn.Module, input_size: int) -> int:
    return sum(row.macs for row in profile_layers(model, input_size))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile_module(module: nn.Module, input_shape: tuple[int, ...]) -> list[LayerStats]:
    """Rows for the leaf modules of ``module`` run on one sample of ``input_shape`` (C, H, W) or (features,).

    The forward runs in eval mode on the meta device: even VGG-19 at 224² costs no compute, and the real
    weights are neither copied nor touched (meta copies share no storage).
    """
    rows: list[LayerStats] = []
    names = {m: n for n, m in module.named_modules()}

    def hook(m: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            params = sum(p.numel() for p in m.parameters(recurse=False))
            rows.append(LayerStats(names[m], type(m).__name__, tuple(output.shape[1:]), layer_macs(m, output), params))

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        shape_forward(module, input_shape, restart=rows.clear)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def shape_forward(module: nn.Module, input_shape: tuple[int, ...], *, restart=lambda: None) -> object:
    """Run ``module`` on one sample of ``input_shape`` in eval mode, shape-only on the meta device.

    Code that needs real values (``.item()``, numpy, data-dependent branches, common in users' models) gets one
    real forward on zeros instead, after ``restart()`` has reset whatever the hooks recorded.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            meta = {k: v.to("meta") for k, v in [*module.named_parameters(), *module.named_buffers()]}
            try:
                return torch.func.functional_call(module, meta, (torch.empty(1, *input_shape, device="meta"),))
            except Exception:
                if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
                    raise
                restart()
                device = next((p.device for p in module.parameters()), torch.device("cpu"))
                return module(torch.zeros(1, *input_shape, device=device))
    finally:
        module.train(was_training)
