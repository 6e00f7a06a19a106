"""Option groups: a dataclass whose fields are Typer options, shared by every command that takes them.

A command declares one parameter typed with the group (``compress: CompressOptions``); :func:`with_groups`
shows Typer the group's fields as ordinary options and hands the command one built group object.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Teacher name (see `mobilelwt models`), or your own: path/to/file.py:factory or package.module:factory.",
    ),
]
TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="Allow --model file.py:factory / package.module:factory: building it runs that Python code.",
    ),
]


def allow_model_code(trust: bool, *models: str) -> None:
    """Record the user's consent to run model code, and say whose code will run."""
    from mobilelwt.cli._common import err_console
    from mobilelwt.teachers.user import is_user_model, trust_user_code

    if not trust:
        return
    trust_user_code(True)
    for model in models:
        if is_user_model(model):
            err_console.print(f"note: --trust-code: building {model} runs its Python code", highlight=False)


def with_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """Expand every dataclass-typed parameter of ``command`` into its fields for Typer."""
    hints = typing.get_type_hints(command, include_extras=True)
    own: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for parameter in inspect.signature(command).parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if dataclasses.is_dataclass(annotation):
            groups[parameter.name] = annotation
        else:
            own.append(parameter.replace(annotation=annotation))
    fields = {name: [f.name for f in dataclasses.fields(group)] for name, group in groups.items()}
    expanded = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=typing.get_type_hints(group, include_extras=True)[f.name],
        )  # fmt: skip
        for group in groups.values()
        for f in dataclasses.fields(group)
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in fields[name]})
        return command(**kwargs)

    wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + expanded
    )
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # Typer must read the expanded signature, not the command's own
    return wrapper


@dataclasses.dataclass
class CompressOptions:
    """What `compress` and `build` share: the plan, the replacement modules, layer-wise training, fine-tune."""

    speedup: Annotated[float, typer.Option(help="Target reduction of the teacher's MACs.")] = 4.0
    planner: Annotated[str, typer.Option(help="uniform, sensitivity or latency.")] = "uniform"
    conv_module: Annotated[str, typer.Option(help="lowrank_spatial, bottleneck, grouped or depthwise_separable.")] = (
        "lowrank_spatial"
    )
    compress_fc: Annotated[bool, typer.Option(help="Also factorise the fully connected layers.")] = True
    calib_images: Annotated[int, typer.Option(help="Calibration images for the sensitivity planner.")] = 64
    latency_runtime: Annotated[
        str, typer.Option(help="Runtime the latency planner times on: executorch or litert.")
    ] = "executorch"
    layer_epochs: Annotated[float, typer.Option(help="Passes over the data per layer (0: closed form only).")] = 1.0
    layer_max_steps: Annotated[int | None, typer.Option(help="Cap the steps per layer.")] = None
    layer_input: Annotated[str, typer.Option(help="student (sequential) or teacher (independent).")] = "student"
    layer_lr: Annotated[float, typer.Option(help="Learning rate of layer-wise training (Adam).")] = 1e-3
    layer_batch_size: Annotated[int, typer.Option(help="Images per layer-wise step.")] = 32
    finetune_epochs: Annotated[int, typer.Option(help="Epochs of distillation fine-tune (0: none).")] = 2
    finetune_lr: Annotated[float, typer.Option(help="Peak learning rate of the fine-tune (AdamW).")] = 1e-4
    finetune_batch_size: Annotated[int, typer.Option(help="Images per fine-tune step.")] = 64
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0
    alpha: Annotated[float, typer.Option(help="Weight of the distillation term (1 - alpha: labels).")] = 0.7
    seed: Annotated[int, typer.Option(help="Seed for split, sampling and training.")] = 0

    def config(self):
        """The :class:`CompressConfig` these options describe (validated on construction)."""
        from mobilelwt.compress import CompressConfig
        from mobilelwt.distill import DistillConfig
        from mobilelwt.layerwise import LayerwiseConfig

        return CompressConfig(
            speedup=self.speedup,
            planner=self.planner,
            conv_module=self.conv_module,
            compress_fc=self.compress_fc,
            calib_images=self.calib_images,
            layerwise=LayerwiseConfig(
                epochs=self.layer_epochs,
                max_steps=self.layer_max_steps,
                layer_input=self.layer_input,
                lr=self.layer_lr,
                batch_size=self.layer_batch_size,
                seed=self.seed,
            ),
            finetune=DistillConfig(
                epochs=self.finetune_epochs,
                lr=self.finetune_lr,
                batch_size=self.finetune_batch_size,
                temperature=self.temperature,
                alpha=self.alpha,
                seed=self.seed,
            ),
            seed=self.seed,
        )

    def latency_probe(self, threads: int | None):
        """The runtime timer of the latency planner, or None for the other planners."""
        if self.planner != "latency":
            return None
        from targets import RUNTIMES, TargetError, latency_probe

        if self.latency_runtime not in RUNTIMES:
            raise TargetError(f"Unknown runtime {self.latency_runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
        runtime = self.latency_runtime
        return lambda size: latency_probe(runtime, input_size=size, threads=threads or 2)
