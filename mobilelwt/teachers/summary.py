"""Teacher summaries: params, MACs and the per-layer table of each named teacher, shape-only."""

from __future__ import annotations

from mobilelwt.profile import count_params, profile_layers
from mobilelwt.teachers._api import build_teacher, get_teacher_spec


def summarize_teachers(
    names: list[str], *, input_size: int = 224, num_classes: int | None = None
) -> list[dict[str, object]]:
    """Params and MACs of each named teacher at ``input_size`` (shape-only, no weights are loaded)."""
    rows = []
    for name in names:
        teacher = build_teacher(name, num_classes=num_classes, input_size=input_size, device="meta")
        layers = profile_layers(teacher.model, input_size)
        rows.append(
            {
                "model": teacher.name,
                "family": get_teacher_spec(name).family,
                "input_size": input_size,
                "num_classes": teacher.num_classes,
                "params": count_params(teacher.model),
                "macs": sum(r.macs for r in layers),
                "layers": [r.to_dict() for r in layers],
            }
        )
    return rows
