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
    """One row per leaf module that runs in the forward pass, in execution order.

    The forward runs on the meta device, so even VGG-19 at 224² costs no real compute.
    """
    rows: list[LayerStats] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        rows.append(
            LayerStats(
                name=names[module],
                type=type(module).__name__,
                output_shape=tuple(output.shape[1:]),
                macs=layer_macs(module, output),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
            )
        )

    # Meta copies of the tensors share no storage: the real weights are neither copied nor touched.
    meta_tensors = {k: v.to("meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()
            x = torch.empty(1, in_channels, input_size, input_size, device="meta")
            torch.func.functional_call(model, meta_tensors, (x,))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def count_macs(model: nn.Module, input_size: int) -> int:
    return sum(row.macs for row in profile_layers(model, input_size))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summarize_teachers(names: list[str], *, input_size: int = 224, num_classes: int = 1000) -> list[dict[str, object]]:
    """Params and MACs of each named teacher at ``input_size`` (shape-only, no weights are loaded)."""
    from mobilelwt.teachers import build_teacher, get_teacher_spec

    rows = []
    for name in names:
        teacher = build_teacher(name, num_classes=num_classes, input_size=input_size, device="meta")
        layers = profile_layers(teacher.model, input_size)
        rows.append(
            {
                "model": name,
                "family": get_teacher_spec(name).family,
                "input_size": input_size,
                "num_classes": num_classes,
                "params": count_params(teacher.model),
                "macs": sum(r.macs for r in layers),
                "layers": [r.to_dict() for r in layers],
            }
        )
    return rows
