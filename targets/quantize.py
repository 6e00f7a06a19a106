"""PT2E post-training quantisation, shared by the adapters that export int8 (ExecuTorch, TFLite/LiteRT).

Each adapter brings its own quantizer (XNNPACK's, litert-torch's); the export -> prepare -> calibrate -> convert
sequence is the same, so it lives here once. torchao is imported inside the function (heavy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from targets._common import TargetError


def quantize_pt2e(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: torch.Tensor | None,
    quantizer: Any,
    *,
    fold_quantize: bool = True,
) -> nn.Module:
    """Prepare ``model`` with ``quantizer``, run ``calibration`` through it (one image at a time), convert."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calibration is None or len(calibration) == 0:
        raise TargetError("int8 export needs calibration images.", "Export from a build whose data is available.")
    graph = torch.export.export(model.eval(), example_inputs).module()
    prepared = move_exported_model_to_eval(prepare_pt2e(graph, quantizer))  # dropout off while calibrating
    with torch.no_grad():
        for image in calibration:
            prepared(image.unsqueeze(0))
    return move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=fold_quantize))
