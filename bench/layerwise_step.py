"""Layer-wise step benchmark: the first replaced layer trained from one teacher pass, against the student pass it
replaces (``mobilelwt.layerwise``: its prefix is the teacher's, so both passes give the same input).

    python bench/layerwise_step.py --json bench/results/layerwise-step-alexnet64.json

AlexNet (random weights, 10 classes) at 64², fc6 and fc7 factorised (rank 256), as a frontier's first rungs plan
it; one layer-wise step of fc6 (batch 32: prefix passes, the replacement's forward, backward and Adam step) timed
both ways, in interleaved blocks after warm-up, in one process. The two ways give the same weights (checked here
on one step); the test suite checks a whole run. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fresh import machine, write_result  # noqa: E402  (bench/fresh.py, beside this script)


def bootstrap_ci(ratios: list[float], draws: int = 2000) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor(ratios)
    picks = torch.randint(len(ratios), (draws, len(ratios)), generator=generator)
    medians = values[picks].median(dim=1).values.sort().values
    return [float(medians[int(0.025 * draws)]), float(medians[int(0.975 * draws)])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved blocks of each way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mobilelwt.layerwise import layer_pair, normalized_mse
    from mobilelwt.plan import LayerChoice, Plan, apply_plan
    from mobilelwt.teachers import build_teacher

    teacher = build_teacher("alexnet", num_classes=10, weights="none", input_size=args.input_size, seed=0).model.eval()
    layers = {name: LayerChoice("factorized_linear", {"rank": args.rank}) for name in ("classifier.1", "classifier.4")}
    plan = Plan(model="alexnet", input_size=args.input_size, num_classes=10, target_speedup=2.0, planner="bench",
                layers=layers)  # fmt: skip
    images = torch.randn(32, 3, args.input_size, args.input_size)
    students = {way: apply_plan(teacher, plan).eval() for way in ("teacher", "student")}
    optimizers = {way: torch.optim.Adam(s.get_submodule("classifier.1").parameters(), 1e-3)
                  for way, s in students.items()}  # fmt: skip

    def step(way: str) -> None:
        student = students[way]
        module = student.get_submodule("classifier.1")
        x, target = layer_pair(teacher, student, "classifier.1", images, way)
        loss = normalized_mse(module(x), target)
        optimizers[way].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[way].step()

    step("teacher")
    step("student")
    a, b = students["teacher"].state_dict(), students["student"].state_dict()
    same = all(torch.equal(a[k], b[k]) for k in a)

    def block(way: str) -> float:
        started = time.perf_counter()
        for _ in range(args.steps):
            step(way)
        return (time.perf_counter() - started) / args.steps * 1000

    for way in ("teacher", "student"):  # warm-up
        block(way)
    times: dict[str, list[float]] = {"teacher": [], "student": []}
    for index in range(args.rounds):
        order = ("teacher", "student") if index % 2 == 0 else ("student", "teacher")
        for way in order:
            times[way].append(block(way))
    ratios = [s / t for s, t in zip(times["student"], times["teacher"], strict=True)]
    result = {
        "machine": machine(),
        "setting": f"AlexNet {args.input_size}², fc6+fc7 factorised at rank {args.rank}, fc6 step, batch 32, "
        f"{args.threads} threads, PyTorch CPU {torch.__version__}",
        "command": " ".join(sys.argv),
        "same_weights_after_a_step": same,
        "ms_per_step": {way: {"median": statistics.median(v), "samples": v} for way, v in times.items()},
        "speedup": statistics.median(ratios),
        "speedup_ci95": bootstrap_ci(ratios),
        "rounds": args.rounds,
        "steps_per_block": args.steps,
    }
    print(result["setting"])
    print("way | ms per step (median)")
    print(f"one teacher pass (now) | {result['ms_per_step']['teacher']['median']:.1f}")
    print(f"teacher + student pass (before) | {result['ms_per_step']['student']['median']:.1f}")
    low, high = result["speedup_ci95"]
    print(f"step speedup {result['speedup']:.2f}x ({low:.2f}-{high:.2f}, {args.rounds} interleaved blocks); "
          f"same weights after one step: {same}")  # fmt: skip
    write_result(args.json, result)


if __name__ == "__main__":
    main()
