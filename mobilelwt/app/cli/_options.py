"""Option groups: a dataclass whose fields are Typer options, shared by every command that takes them.

A command declares one parameter typed with the group (``compress: CompressOptions``); :func:`with_groups`
shows Typer the group's fields as ordinary options, checks every option by its kind of value
(:mod:`mobilelwt.app.cli._params`), and hands the command one built group object.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from mobilelwt.app.cli._common import err_console
from mobilelwt.app.cli._launch import relaunch
from mobilelwt.app.cli._params import (
    COUNT,
    COUNT_OPTIONAL,
    COUNT_OR_ZERO,
    COUNT_OR_ZERO_OPTIONAL,
    DATA,
    HELD_OUT_SHARE,
    HOST_THREADS,
    IMAGE_DIR,
    INTERVAL_WIDTH,
    LATENCY_THREADS,
    NON_NEGATIVE,
    POINTS,
    POSITIVE,
    PROBABILITY,
    RATIO,
    SEED,
    TIME_CAP,
    TRAINING_DEVICE,
    count,
    flag_of,
    kinds_of,
    one_of,
    parameter_info,
    with_number_parser,
)
from mobilelwt.settings import RunSettings

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
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.teachers.user import is_user_model, trust_user_code

    if not trust:
        return
    trust_user_code(True)
    for model in models:
        if is_user_model(model):
            err_console.print(f"note: --trust-code: building {model} runs its Python code", highlight=False)


def with_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """Expand every dataclass-typed parameter of ``command`` into its fields for Typer, and check every option
    that names its kind of value (:mod:`mobilelwt.app.cli._params`) before the command runs."""
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

    flags = {p.name: flag_of(p.name, parameter_info(p.annotation)) for p in [*own, *expanded]}
    checked = [(p.name, flags[p.name], kind) for p in [*own, *expanded] for kind in kinds_of(p.annotation)]

    def parsed(p: inspect.Parameter) -> inspect.Parameter:
        """A number option converted by a parser whose message says the fix."""
        return p.replace(annotation=with_number_parser(p.annotation, flags[p.name], p.default))

    own, expanded = [parsed(p) for p in own], [parsed(p) for p in expanded]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        for name, flag, kind in checked:  # every kind's one check, in the order of the options
            kwargs[name] = kind(kwargs[name], flag, kwargs)
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

    speedup: Annotated[
        float | None,
        typer.Option(help="Target speedup measured on the target (--latency-runtime/--latency-device); default 4."),
        RATIO,
    ] = None
    mac_speedup: Annotated[
        float | None,
        typer.Option(help="Target reduction of the teacher's MACs instead (planners uniform, sensitivity)."),
        RATIO,
    ] = None
    max_drop: Annotated[
        float | None,
        typer.Option(
            help="The fastest student whose top-1 stays within this many points of the teacher's: searches the "
            "speedup/accuracy frontier (frontier.json); with --speedup, at least that fast."
        ),
        POINTS,
    ] = None
    planner: Annotated[
        str | None,
        typer.Option(
            help="latency (per-layer tables; default for --speedup), latency-uniform, uniform (default for "
            "--mac-speedup) or sensitivity."
        ),  # fmt: skip
    ] = None
    conv_module: Annotated[str, typer.Option(help="lowrank_spatial, bottleneck, grouped or depthwise_separable.")] = (
        "lowrank_spatial"
    )
    compress_fc: Annotated[bool, typer.Option(help="Also factorise the fully connected layers.")] = True
    calib_images: Annotated[
        int, typer.Option(help="Calibration images of the accuracy proxy (latency, sensitivity)."), COUNT
    ] = 64
    latency_runtime: Annotated[
        str,
        typer.Option(help="Runtime a measured --speedup is timed on: executorch or litert."),
        one_of(("executorch", "litert")),
    ] = "executorch"
    latency_device: Annotated[
        str, typer.Option(help="Where a measured --speedup is timed: host, or an adb serial (a phone).")
    ] = "host"
    latency_precision: Annotated[
        str, typer.Option(help="Precision the latency is timed in: fp32 or int8."), one_of(("fp32", "int8"))
    ] = "fp32"
    latency_threads: Annotated[int, typer.Option(help="Runtime threads when timing for the plan."), LATENCY_THREADS] = 2
    latency_table: Annotated[
        str | None, typer.Option(help="A shared per-layer latency table (JSON): read, and extended when measured.")
    ] = None
    allow_foreign_table: Annotated[
        bool, typer.Option(help="Plan from a --latency-table measured on another device (predicted, not timed).")
    ] = False
    candidate_modules: Annotated[
        str | None,
        typer.Option(help="Comma-separated conv kinds the latency planner chooses from (default: --conv-module)."),
    ] = None
    rank_grid: Annotated[
        int, typer.Option(help="Ranks per module kind in the latency table."), count(low=2, high=64)
    ] = 8
    latency_python: Annotated[
        str, typer.Option(help="Python on the --latency-device that runs mobilelwt's device runner.")
    ] = "python3"
    latency_adb_server: Annotated[str, typer.Option(help="adb server of the --latency-device: local or HOST:PORT.")] = (
        "local"
    )
    layer_epochs: Annotated[
        float, typer.Option(help="Passes over the data per layer (0: closed form only)."), NON_NEGATIVE
    ] = 1.0
    layer_max_steps: Annotated[int | None, typer.Option(help="Cap the steps per layer."), COUNT_OPTIONAL] = None
    layer_input: Annotated[
        str, typer.Option(help="student (sequential) or teacher (independent)."), one_of(("student", "teacher"))
    ] = "student"
    layer_budget: Annotated[
        str,
        typer.Option(help="uniform (each layer --layer-epochs) or by-error (the same steps, shared by layer error)."),
        one_of(("uniform", "by-error")),
    ] = "uniform"
    layer_lr: Annotated[float, typer.Option(help="Learning rate of layer-wise training (Adam)."), POSITIVE] = 1e-3
    layer_batch_size: Annotated[int, typer.Option(help="Images per layer-wise step."), COUNT] = 32
    finetune_epochs: Annotated[int, typer.Option(help="Epochs of distillation fine-tune (0: none)."), COUNT_OR_ZERO] = 2
    finetune_max_steps: Annotated[
        int | None, typer.Option(help="Cap the steps of each fine-tune epoch (quick runs)."), COUNT_OPTIONAL
    ] = None
    finetune_lr: Annotated[float, typer.Option(help="Peak learning rate of the fine-tune (AdamW)."), POSITIVE] = 1e-4
    finetune_batch_size: Annotated[int, typer.Option(help="Images per fine-tune step."), COUNT] = 64
    temperature: Annotated[float, typer.Option(help="Distillation temperature."), POSITIVE] = 4.0
    alpha: Annotated[float, typer.Option(help="Weight of the distillation term (1 - alpha: labels)."), PROBABILITY] = (
        0.7
    )
    seed: Annotated[int, typer.Option(help="Seed for split, sampling and training."), SEED] = 0

    def config(self, timing: TimingOptions | None = None):
        """The :class:`CompressConfig` these options describe (validated on construction); ``timing`` says how the
        latency planner measures."""
        timing = timing or TimingOptions()
        # lazy: imports torch (seconds); `--help` and option errors answer at once
        from mobilelwt.compress import CompressConfig, LatencyTarget
        from mobilelwt.distill import DistillConfig
        from mobilelwt.layerwise import LayerwiseConfig

        modules = tuple(m.strip() for m in (self.candidate_modules or "").split(",") if m.strip())
        return CompressConfig(
            speedup=self.speedup,
            mac_speedup=self.mac_speedup,
            max_drop=self.max_drop,
            planner=self.planner,
            latency=LatencyTarget(
                runtime=self.latency_runtime,
                device=self.latency_device,
                precision=self.latency_precision,
                threads=self.latency_threads,
                table=str(Path(self.latency_table).resolve()) if self.latency_table else None,
                allow_foreign_table=self.allow_foreign_table,
                modules=modules,
                grid_points=self.rank_grid,
                cache=timing.cache,
                timing_width=timing.timing_width,
                timing_cap_s=timing.timing_cap,
            ),
            conv_module=self.conv_module,
            compress_fc=self.compress_fc,
            calib_images=self.calib_images,
            layerwise=LayerwiseConfig(
                epochs=self.layer_epochs,
                max_steps=self.layer_max_steps,
                layer_input=self.layer_input,
                budget=self.layer_budget,
                lr=self.layer_lr,
                batch_size=self.layer_batch_size,
                seed=self.seed,
            ),
            finetune=DistillConfig(
                epochs=self.finetune_epochs,
                max_steps_per_epoch=self.finetune_max_steps,
                lr=self.finetune_lr,
                batch_size=self.finetune_batch_size,
                temperature=self.temperature,
                alpha=self.alpha,
                seed=self.seed,
            ),
            seed=self.seed,
        )

    def latency_probe(self, config):
        """The factory of the target ``config``'s latency planner times on (None for the MAC planners)."""
        if not config.measured:
            return None
        python, server = self.latency_python, self.latency_adb_server
        made: dict[tuple[Any, ...], Any] = {}

        def factory(target):
            # lazy: imports torch (seconds); `--help` and option errors answer at once
            from device_bench.probe import make_probe
            from device_bench.protocol import TimingPolicy

            # one probe per way of timing: a frontier's rungs (targets that differ in value and band only) share it,
            # and with it the programs it has lowered (the teacher, once)
            how = (target.runtime, target.device, target.precision, target.threads, target.cache,
                   target.timing_width, target.timing_cap_s)  # fmt: skip
            if how not in made:
                policy = TimingPolicy(cache=target.cache, rel_width=target.timing_width,
                                      max_seconds=target.timing_cap_s)  # fmt: skip
                made[how] = make_probe(target.runtime, device=target.device, precision=target.precision,
                                       threads=target.threads, python=python, server=server, policy=policy)  # fmt: skip
            return made[how]

        return factory


@dataclasses.dataclass
class TimingOptions:
    """How every speedup is measured (the planner's, the build's bench, `bench`): the cache state it is planned for
    and headlined in, and when a measurement stops."""

    cache: Annotated[
        str,
        typer.Option(
            help="Cache state a speedup is planned for and headlined in: cold (caches flushed before each run, as an "
            "app's occasional inference sees it) or warm (back-to-back runs, as benchmark_model). Both are recorded."
        ),
        one_of(("cold", "warm")),
    ] = "cold"
    timing_width: Annotated[
        float,
        typer.Option(help="Time until the speedup's 95% interval is within ± this share of it."),
        INTERVAL_WIDTH,
    ] = 0.05
    timing_cap: Annotated[
        float, typer.Option(help="... or until this many seconds have passed (per measurement)."), TIME_CAP
    ] = 60.0


@dataclasses.dataclass
class RunOptions:
    """What `train-teacher`, `compress` and `build` share: the data, its validation split, the input size, and the
    machine the training runs on."""

    data: Annotated[str, typer.Option(help="ImageFolder directory or built-in dataset name."), DATA] = "digits"
    val_data: Annotated[str | None, typer.Option(help="Separate labelled ImageFolder for validation."), IMAGE_DIR] = (
        None
    )
    val_fraction: Annotated[float, typer.Option(help="Share of --data held out for validation."), HELD_OUT_SHARE] = 0.1
    input_size: Annotated[
        int | None, typer.Option(help="Square input side (default: the teacher checkpoint's, else the dataset's).")
    ] = None
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads for training (default: torch's)."), HOST_THREADS
    ] = None
    device: Annotated[str, typer.Option(help="Where training runs: cpu, cuda, cuda:N or auto."), TRAINING_DEVICE] = (
        "cpu"
    )
    workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader worker processes per rank for sets too large for memory (0: threads; default: the "
            "cores shared by the ranks, at most 8)."
        ),
        COUNT_OR_ZERO_OPTIONAL,
    ] = None

    def settings(self) -> RunSettings:
        """The core's :class:`RunSettings` (checked by the stage that runs, before any work)."""
        return RunSettings(data=self.data, val_data=self.val_data, val_fraction=self.val_fraction,
                           input_size=self.input_size, threads=self.threads, device=self.device,
                           workers=self.workers)  # fmt: skip


@dataclasses.dataclass
class ParallelOptions:
    """How training scales out: ranks started through torchrun."""

    nproc: Annotated[
        int | None,
        typer.Option(
            help="Train data-parallel on N processes of this machine (re-launches through torchrun; one per GPU "
            "with --device cuda). Several machines: start torchrun yourself."
        ),
        COUNT_OPTIONAL,
    ] = None

    def relaunch(self) -> None:
        """With ``--nproc N`` (N > 1) outside torchrun: run this same command as N ranks, then exit with their code."""
        relaunch(self.nproc)
