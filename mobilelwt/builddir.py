"""The build directory: its file names, validated reads, content fingerprints and the one freshness rule.

Stages run in order ``teacher -> compress -> export -> bench -> report``. Each stage's output records the
content hashes of what it was made from (``inputs``, digested into a ``key``). A stage whose recorded key
matches what it would be made from now is reused; otherwise its outputs and everything downstream are removed
before it runs again, so a re-run with any changed input equals a fresh run and nothing stale is ever shown.
Every other package reads builds through this module.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.io import jsonable

if TYPE_CHECKING:
    from mobilelwt.data import DataBundle
    from mobilelwt.plan import Plan
    from mobilelwt.teachers import Teacher

PLAN = "plan.json"
STUDENT = "student.pt"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
LAYERWISE = "layerwise"
LATENCY_CACHE = "latency-cache.json"  # written by older builds
LATENCY_TABLE = "latency-table.json"
ARTIFACTS = "artifacts.json"
BENCH = "bench.jsonl"
LAYER_LATENCY = "layer-latency.json"
OP_PROFILE = "op-profile.json"
SUMMARY = "build.json"
REPORT_STEM = "report"
REPORT_SUFFIXES = (".html", ".md", ".csv", ".json")
TEACHER_DIR = "teacher"
TARGET_DIRS = ("android", "ios")

STAGES = ("teacher", "compress", "export", "bench", "report")
ARTIFACTS_FORMAT = "mobilelwt.artifacts/2"


class BuildFileError(ConfigError):
    """A build file that is missing, corrupt, or written by something else."""


def digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON: equal settings give equal digests, whatever their key order."""
    blob = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def tensor_sha256(tensor: torch.Tensor, into: Any | None = None) -> str:
    """Content hash of a tensor: dtype, shape and every byte."""
    h = into or hashlib.sha256()
    # flattened: a 0-dim buffer (batch norm's num_batches_tracked) cannot be viewed as bytes
    t = tensor.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(tensor.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """Content hash of a model's weights (names, dtypes, shapes, bytes): the same for the same weights, whatever
    file or seed they came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0")
        tensor_sha256(tensor, h)
    return h.hexdigest()


def read_json(path: Path, *, what: str, fix: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from ``path``, or one clear error naming the file (truncated, empty, foreign, unreadable)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BuildFileError(f"{path} does not exist ({what}).", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildFileError(f"{path} cannot be read ({what}): {exc}.", fix) from None
    if not text.strip():
        raise BuildFileError(f"{path} is empty ({what}; an interrupted write or copy?).", fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BuildFileError(f"{path} is not valid JSON ({what}; truncated?): {exc}.", fix) from None
    if not isinstance(data, dict):
        raise BuildFileError(f"{path} holds a JSON {type(data).__name__}, not the {what} object.", fix)
    missing = [key for key in required if key not in data]
    if missing:
        raise BuildFileError(f"{path} is not a mobilelwt {what}: it lacks {', '.join(missing)}.", fix)
    return data


def _remove(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    if path.exists() or path.is_symlink():
        path.unlink()
        return True
    return False


@dataclass(frozen=True)
class BuildDir:
    """One build directory: where each stage's files live, how to read them, and the freshness rule."""

    path: Path

    def __init__(self, path: Path | str) -> None:
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- stage outputs -------------------------------------------------------------------------------------
    def stage_outputs(self, stage: str) -> list[Path]:
        """The files and folders ``stage`` writes (that exist now)."""
        p = self.path
        if stage == "teacher":
            found = [p / TEACHER_DIR]
        elif stage == "compress":
            found = [p / MANIFEST, p / METRICS, p / STUDENT, p / PLAN, p / LAYERWISE, p / LATENCY_CACHE,
                     p / LATENCY_TABLE]  # fmt: skip
        elif stage == "export":
            found = [p / ARTIFACTS, *(p / d for d in TARGET_DIRS)]
        elif stage == "bench":
            found = [
                p / BENCH,
                p / LAYER_LATENCY,
                p / OP_PROFILE,
                p / "host-bench.json",  # written by builds before bench.jsonl was the one sink
                *p.glob("device-inputs-*.npy"),
            ]
        elif stage == "report":
            found = [p / SUMMARY, *(p / f"{REPORT_STEM}{suffix}" for suffix in REPORT_SUFFIXES)]
        else:
            raise ValueError(f"unknown stage {stage!r}")
        return [f for f in found if f.exists() or f.is_symlink()]

    def invalidate(self, stage: str, *, keep: tuple[str, ...] = ()) -> list[Path]:
        """Remove ``stage``'s outputs (except the names in ``keep``) and everything downstream of it.

        Downstream first, so that an interruption never leaves a later stage's file beside a removed input.
        """
        removed = []
        for later in reversed(STAGES[STAGES.index(stage) :]):
            for path in self.stage_outputs(later):
                if later == stage and path.name in keep:
                    continue
                if _remove(path):
                    removed.append(path)
        return removed

    # -- compress ------------------------------------------------------------------------------------------
    def is_compressed(self) -> bool:
        return (self.path / MANIFEST).is_file() and (self.path / STUDENT).is_file()

    def manifest(self) -> dict[str, Any]:
        if not (self.path / MANIFEST).is_file():
            raise BuildFileError(
                f"{self.path} is not a finished build (no {MANIFEST}).",
                "Run `mobilelwt compress` or `mobilelwt build` into it first.",
            )
        return read_json(
            self.path / MANIFEST,
            what="build manifest",
            fix="Re-run `mobilelwt compress` (or `mobilelwt build`) into this directory.",
            required=("teacher", "settings", "inputs", "files"),
        )

    def metrics(self) -> dict[str, Any]:
        if not (self.path / METRICS).is_file():
            raise BuildFileError(
                f"{self.path} has no {METRICS}.", "Pass a build directory written by `mobilelwt compress` or `build`."
            )
        return read_json(
            self.path / METRICS,
            what="compress metrics",
            fix="Re-run `mobilelwt compress` (or `mobilelwt build`) into this directory.",
            required=("model", "teacher", "student", "inputs"),
        )

    def plan(self) -> Plan:
        from mobilelwt.plan import Plan

        return Plan.load(self.path / PLAN)

    def compress_key(self) -> str:
        """The key of the finished compress stage (its inputs' digest)."""
        return self.manifest()["inputs"]["key"]

    def check_student(self, manifest: dict[str, Any]) -> None:
        """The student file must be the one the manifest recorded: a replaced or damaged file is not this build."""
        from mobilelwt.io import sha256_file

        recorded = manifest["files"].get(STUDENT, {}).get("sha256")
        if recorded != sha256_file(self.path / STUDENT):
            raise BuildFileError(
                f"{self.path / STUDENT} is not the student this build's manifest records (changed or damaged).",
                "Re-run `mobilelwt compress` (or `mobilelwt build`) into this directory.",
            )

    # -- export --------------------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, Any]:
        """The export listing of the *current* student; an empty listing when none exists or it is stale."""
        path = self.path / ARTIFACTS
        empty = {"format": ARTIFACTS_FORMAT, "artifacts": [], "targets": []}
        if not path.is_file():
            return empty
        listing = read_json(
            path,
            what="export listing",
            fix="Re-run `mobilelwt export` (or `mobilelwt build`) into this directory.",
            required=("artifacts",),
        )
        if not isinstance(listing["artifacts"], list) or not all(
            isinstance(a, dict) and {"path", "status", "role"} <= set(a) for a in listing["artifacts"]
        ):
            raise BuildFileError(
                f"{path} is not a mobilelwt export listing (bad artifact records).",
                "Re-run `mobilelwt export` into this directory.",
            )
        if self.is_compressed() and listing.get("compress_key") != self.compress_key():
            return empty  # exported from another student: nothing in it is current
        return listing

    def current_artifact(self, record: dict[str, Any]) -> bool:
        """An exported file is current when it exists with the bytes its record names."""
        from targets._common import tree_sha256

        path = self.path / record["path"]
        return record.get("status") in ("ok", "mismatch") and path.exists() and tree_sha256(path) == record["sha256"]

    # -- bench ---------------------------------------------------------------------------------------------
    def bench_records(self, *, current_only: bool = True) -> list[dict[str, Any]]:
        """Records of ``bench.jsonl``; with ``current_only``, only those measured on the listed artifact bytes."""
        path = self.path / BENCH
        if not path.is_file():
            return []
        records = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise BuildFileError(
                    f"{path} line {number} is not JSON (cut short by a crash?).",
                    "Remove that line, or delete the file and re-run `mobilelwt bench`.",
                ) from None
            if not isinstance(record, dict) or "artifact" not in record:
                raise BuildFileError(f"{path} line {number} is not a bench record.", "Re-run `mobilelwt bench`.")
            records.append(record)
        if not current_only:
            return records
        listed = {a["path"]: a.get("sha256") for a in self.artifacts()["artifacts"] if a.get("status") == "ok"}
        return [r for r in records if r["artifact"] in listed and r.get("artifact_sha256") == listed[r["artifact"]]]

    def op_profiles(self) -> dict[str, Any]:
        """Per-operator profiles of the current artifacts: the host's by path, a device's as ``PATH on DEVICE``
        (kept in its bench record); profiles of other bytes are left out."""
        listed = {a["path"]: a.get("sha256") for a in self.artifacts()["artifacts"]}
        profiles: dict[str, Any] = {}
        path = self.path / OP_PROFILE
        if path.is_file():
            data = read_json(path, what="operator profile", fix="Re-run `mobilelwt bench --profile`.")
            profiles = {k: v for k, v in data.get("artifacts", {}).items() if listed.get(k) == v.get("sha256")}
        if (self.path / BENCH).is_file():
            for record in self.bench_records():
                profile = record.get("op_profile")
                if profile and listed.get(record["artifact"]) == profile.get("sha256"):  # ops, or why none
                    profiles[f"{record['artifact']} on {record['device']}"] = profile
        return profiles

    def layer_latency(self) -> dict[str, Any] | None:
        path = self.path / LAYER_LATENCY
        if not path.is_file():
            return None
        data = read_json(path, what="per-layer latency", fix="Re-run `mobilelwt bench --layers`.")
        if self.is_compressed() and data.get("compress_key") != self.compress_key():
            return None
        return data


def data_fingerprint(bundle: DataBundle) -> str:
    """What the data stage hands on: the split's description and every file's name, size and modification time."""
    return digest({"describe": bundle.describe(), "train": bundle.train.fingerprint(), "val": bundle.val.fingerprint()})


def teacher_fingerprint(teacher: Teacher) -> str:
    """The teacher's weights; for a user model, its code too (a changed forward makes another teacher)."""
    weights = state_dict_sha256(teacher.model)
    return weights if teacher.code is None else digest({"weights": weights, "code": teacher.code["sha256"]})


def trust_recorded_code(teacher_info: dict[str, Any], build_dir: Path) -> None:
    """A build made from user code (with the user's consent) may load that exact file again in later stages;
    a file that changed since is another teacher, and the build's student and numbers are stale."""
    from mobilelwt.teachers.user import resolve_source, trust_code_hash

    code = teacher_info.get("code")
    if not code:
        return
    if resolve_source(teacher_info["model"]).sha256 != code["sha256"]:
        raise BuildFileError(
            f"The model code {code['file']} has changed since {build_dir} was compressed, so its student and "
            "numbers are stale.",
            "Re-run `mobilelwt build --trust-code` (or `compress --trust-code`) into this directory.",
        )
    trust_code_hash(code["sha256"])


def load_student_model(build_dir: Path, plan: Plan | None = None) -> nn.Module:
    """The student of a build directory (architecture from plan.json, weights from student.pt)."""
    from mobilelwt.plan import apply_plan
    from mobilelwt.teachers import build_teacher
    from mobilelwt.weights import load_checkpoint, load_into

    build_dir = BuildDir(build_dir)
    plan = plan or build_dir.plan()
    skeleton = build_teacher(plan.model, num_classes=plan.num_classes, input_size=plan.input_size).model
    student = apply_plan(skeleton, plan, init=False, inplace=True)
    load_into(student, load_checkpoint(build_dir / STUDENT)["state_dict"], str(build_dir / STUDENT))
    return student.eval()


@dataclass
class Build:
    """A finished compress stage, loaded in one call: teacher, student, plan, preprocessing."""

    dir: Path
    plan: Plan
    teacher: Teacher
    student: nn.Module
    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return self.manifest["teacher"]["classes"]

    @property
    def key(self) -> str:
        """The compress stage's key: exports and measurements of this student record it."""
        return self.manifest["inputs"]["key"]


def load_build(build_dir: Path) -> Build:
    """Teacher, student and plan of a finished build, checked against what its manifest recorded."""
    from mobilelwt.teachers import build_teacher

    directory = BuildDir(build_dir)
    manifest = directory.manifest()
    directory.check_student(manifest)
    plan = directory.plan()
    info = manifest["teacher"]
    trust_recorded_code(info, directory.path)
    teacher = build_teacher(
        info["model"],
        num_classes=info["num_classes"],
        input_size=info["input_size"],
        weights=info["weights"],
        seed=info.get("seed", 0),
    )
    if teacher_fingerprint(teacher) != info.get("sha256"):
        raise BuildFileError(
            f"The teacher weights {info['weights']} have changed since {directory.path} was compressed (their content "
            "hash differs), so its student and numbers are stale.",
            "Re-run `mobilelwt compress` (or `mobilelwt build`) into this directory.",
        )
    teacher.classes = info["classes"]
    return Build(directory.path, plan, teacher, load_student_model(directory.path, plan), manifest)


def load_build_data(build: Build) -> DataBundle:
    """The build's data with its train/val split as recorded (for calibration and validation of exports)."""
    from mobilelwt.data import load_data

    recorded = build.manifest["settings"]["data"]
    return load_data(
        recorded["source"],
        build.manifest["teacher"]["input_size"],
        val_fraction=recorded.get("val_fraction", 0.1),
        seed=recorded.get("split_seed", 0),
        val_data=recorded.get("val_source"),
        expected_classes=build.classes,
    )
