"""Export benchmark: every format and precision for alexnet and vgg16 teacher and student at 224².

For each artifact: export time, size on disk and parity with the PyTorch model on real images (max abs diff,
SQNR, top-1 agreement) on its host runtime; Core ML is checked structurally (prediction needs macOS). Students come
from the plans of the speed benchmark (``bench/results/speed.json``) with closed-form init; the teachers have
random weights (no ImageNet weights offline), which changes nothing in export time or size, and parity is
measured against those same weights. Images: CIFAR-10 JPEGs resized to 224², calibration and validation disjoint.

    python bench/export.py --data ../shared/data/cifar10-train --images 32 --out bench/results/export.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mobilelwt.data import normalize
from mobilelwt.data.imagefolder import scan_image_folder
from mobilelwt.manifest import environment
from mobilelwt.plan import LayerChoice, Plan, apply_plan
from mobilelwt.profile import count_macs
from mobilelwt.teachers import IMAGENET_MEAN, IMAGENET_STD, build_teacher
from targets.coreml import CoreMLConfig, structural_check
from targets.coreml import export as export_coreml
from targets.executorch import ExecuTorchConfig
from targets.executorch import export as export_pte
from targets.formats import FORMATS
from targets.tflite import TFLiteConfig
from targets.tflite import export as export_tflite
from targets.validation import THRESHOLDS, validate

VARIANTS = [
    ("executorch", "fp32", lambda m, x, p, c: export_pte(m, x, p, ExecuTorchConfig("fp32"))),
    ("executorch", "int8", lambda m, x, p, c: export_pte(m, x, p, ExecuTorchConfig("int8"), calibration=c)),
    ("tflite", "fp32", lambda m, x, p, c: export_tflite(m, x, p, TFLiteConfig("fp32"))),
    ("tflite", "int8", lambda m, x, p, c: export_tflite(m, x, p, TFLiteConfig("int8", "static"), calibration=c)),
    ("coreml", "fp16", lambda m, x, p, c: export_coreml(m, x, p, CoreMLConfig("fp16"))),
    ("coreml", "fp32", lambda m, x, p, c: export_coreml(m, x, p, CoreMLConfig("fp32"))),
    ("coreml", "int8", lambda m, x, p, c: export_coreml(m, x, p, CoreMLConfig("int8"))),
]


def speed_plan(model: str, speed_json: Path, num_classes: int, size: int) -> Plan:
    record = next(r for r in json.loads(speed_json.read_text())["results"] if r["model"] == model)
    layers = {name: LayerChoice(module=c["module"], params={k: v for k, v in c.items() if k != "module"})
              for name, c in record["plan"].items()}  # fmt: skip
    return Plan(model, size, num_classes, record["target_speedup"], "latency", layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--data", default="../shared/data/cifar10-train")
    parser.add_argument("--images", type=int, default=32, help="validation images (as many calibrate int8)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-json", default="bench/results/speed.json")
    parser.add_argument("--workdir", default="runs/bench-export")
    parser.add_argument("--out", default="bench/results/export.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.input_size

    images = scan_image_folder(Path(args.data), size)
    picks = torch.linspace(0, len(images) - 1, 2 * args.images).long()  # spread over every class folder
    pixels = normalize(images.load(picks), IMAGENET_MEAN, IMAGENET_STD)
    calibration, validation = pixels[0::2], pixels[1::2]
    example = (validation[:1],)

    rows = []
    for name in args.models:
        torch.manual_seed(0)
        teacher = build_teacher(name, num_classes=1000, input_size=size).model.eval()
        plan = speed_plan(name, Path(args.speed_json), 1000, size)
        student = apply_plan(teacher, plan, init=True).eval()
        for role, model in (("teacher", teacher), ("student", student)):
            with torch.no_grad():
                batches = [(validation, model(validation).argmax(1))]
            macs = count_macs(model, size)
            for fmt, precision, exporter in VARIANTS:
                path = Path(args.workdir) / f"{name}-{role}-{precision}.{FORMATS.get(fmt).ext}"
                row = {"model": name, "role": role, "format": fmt, "precision": precision, "macs": macs}
                print(f"[{time.strftime('%H:%M:%S')}] {path.name} ...", flush=True)
                try:
                    artifact = exporter(model, example, path, calibration)
                    row.update(export_seconds=artifact.export_seconds, bytes=artifact.bytes)
                    if fmt == "coreml":
                        check = structural_check(path, input_shape=(1, 3, size, size), num_classes=1000,
                                                 precision=precision, class_labels=None)  # fmt: skip
                        row.update(parity="structural (needs macOS to run)", passed=check["passed"])
                    else:
                        run = FORMATS.get(fmt).load(path, threads=args.threads)
                        result = validate(path.name, run, model, batches, precision=precision,
                                          thresholds=THRESHOLDS[precision])  # fmt: skip
                        row.update(max_abs_diff=result.max_abs_diff, sqnr_db=result.sqnr_db,
                                   top1_agreement=result.top1_agreement, passed=result.passed)  # fmt: skip
                except Exception as exc:  # a benchmark records a failure and goes on
                    row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "benchmark": "export",
        "input_size": size,
        "images": args.images,
        "threads": args.threads,
        "rows": rows,
        "environment": environment(),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'artifact':34} {'export s':>8} {'MB':>8} {'max|Δ|':>9} {'SQNR dB':>8} {'agree':>6}")
    for r in rows:
        label = f"{r['model']}-{r['role']}-{r['format']}-{r['precision']}"
        if "error" in r:
            print(f"{label:34} failed: {r['error'][:80]}")
            continue
        parity = (f"{r['max_abs_diff']:9.2g} {r['sqnr_db']:8.1f} {r['top1_agreement']:6.3f}" if "sqnr_db" in r
                  else f"{'structural':>9}")  # fmt: skip
        print(f"{label:34} {r['export_seconds']:8.1f} {r['bytes'] / 1e6:8.2f} {parity}")


if __name__ == "__main__":
    main()
