"""``mobilelwt train-teacher``: train or fine-tune a teacher on a dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from mobilelwt.app.cli._common import console, data_line, handle_user_errors, is_main_process, main_progress
from mobilelwt.app.cli._options import (
    ModelOption,
    ParallelOptions,
    RunOptions,
    TrustCodeOption,
    allow_model_code,
    with_groups,
)
from mobilelwt.app.cli._params import (
    CHECKPOINT,
    COUNT,
    COUNT_OPTIONAL,
    COUNT_OR_ZERO,
    HELD_OUT_SHARE,
    NON_NEGATIVE,
    OUTPUT_FILE,
    POSITIVE_OPTIONAL,
    SEED,
    one_of,
)


@handle_user_errors
@with_groups
def train_teacher_command(
    model: ModelOption,
    out: Annotated[str, typer.Option(help="Checkpoint to write; a manifest JSON is written beside it."), OUTPUT_FILE],
    weights: Annotated[
        str, typer.Option(help="Start from: none (random), imagenet, or a checkpoint path."), CHECKPOINT
    ] = "none",
    epochs: Annotated[int, typer.Option(help="Training epochs."), COUNT_OR_ZERO] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per step."), COUNT] = 64,
    optimizer: Annotated[str, typer.Option(help="adamw or sgd."), one_of(("adamw", "sgd"))] = "adamw",
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 5e-4 AdamW, 0.01 SGD)."), POSITIVE_OPTIONAL
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Weight decay."), NON_NEGATIVE] = 5e-4,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing."), HELD_OUT_SHARE] = 0.1,
    augment: Annotated[bool, typer.Option(help="Random crops (and flips for photos).")] = True,
    seed: Annotated[int, typer.Option(help="Seed for init, split, shuffling and augmentation."), SEED] = 0,
    max_steps_per_epoch: Annotated[
        int | None, typer.Option(help="Cap the steps of each epoch (quick runs)."), COUNT_OPTIONAL
    ] = None,
    run: RunOptions = RunOptions(),  # noqa: B008  (a group of options, expanded for Typer)
    parallel: ParallelOptions = ParallelOptions(),  # noqa: B008
    trust_code: TrustCodeOption = False,
) -> None:
    """Train or fine-tune a teacher; report top-1/top-5 on the val split and save a checkpoint for --weights."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.train import TrainConfig, train_teacher

    allow_model_code(trust_code, model)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        augment=augment,
        seed=seed,
        max_steps_per_epoch=max_steps_per_epoch,
    )
    parallel.relaunch()
    with main_progress() as on_progress:
        result = train_teacher(
            model,
            out=out,
            weights=weights,
            run=run.settings(),
            config=config,
            on_progress=on_progress,
        )
    if not is_main_process():
        return
    m = result.metrics
    console.print(
        f"{model} on {run.data}: val top-1 {m['val_top1']:.2f}%  top-5 {m['val_top5']:.2f}%  "
        f"({m['train_seconds']:.1f} s training on {m['device']}, {m['threads']} threads)"
    )
    console.print(data_line(m))
    console.print(f"checkpoint: {result.checkpoint}\nmanifest:   {result.manifest}")
