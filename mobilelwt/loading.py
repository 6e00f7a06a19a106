"""A finished build loaded back: its teacher, student, plan and data, checked against what its manifest recorded.

The build directory's contract (file names, validated readers, freshness) is :mod:`mobilelwt.builddir`; this
module builds models from it, so it sits above the teachers, the plan and the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mobilelwt.builddir import STUDENT, BuildDir, BuildFileError
from mobilelwt.data import DataBundle, load_data
from mobilelwt.hashing import digest, state_dict_sha256
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.teachers import Teacher, build_teacher
from mobilelwt.teachers.user import resolve_source, trust_code_hash
from mobilelwt.weights import load_checkpoint, load_into


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
    directory = BuildDir(build_dir)
    manifest = directory.manifest()
    directory.check_student(manifest)
    directory.metrics()  # the stage's other record: a damaged or foreign one is named here, not used later
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
    recorded = build.manifest["settings"]["data"]
    return load_data(
        recorded["source"],
        build.manifest["teacher"]["input_size"],
        val_fraction=recorded.get("val_fraction", 0.1),
        seed=recorded.get("split_seed", 0),
        val_data=recorded.get("val_source"),
        expected_classes=build.classes,
    )
