"""The build directory: its file names, validated reads, content fingerprints and the one freshness rule.

Stages run in order ``teacher -> compress -> export -> bench -> report``. Each stage's output records the
content hashes of what it was made from (``inputs``, digested into a ``key``). A stage whose recorded key
matches what it would be made from now is reused; otherwise its outputs and everything downstream are removed
before it runs again, so a re-run with any changed input equals a fresh run and nothing stale is ever shown.
Every other package reads builds through this module; loading a build's models and data is
:mod:`mobilelwt.loading`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilelwt.errors import ConfigError
from mobilelwt.hashing import sha256_file, tree_sha256
from mobilelwt.plan import Plan

PLAN = "plan.json"
STUDENT = "student.pt"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
LAYERWISE = "layerwise"
LATENCY_CACHE = "latency-cache.json"  # written by older builds
LATENCY_TABLE = "latency-table.json"
FRONTIER = "frontier.json"  # a --max-drop search's points and choice
FRONTIER_BENCH_FORMAT = "mobilelwt.frontier-bench/2"  # /1 left the chosen point's fp32 file to the build's bench
FRONTIER_BENCH = "frontier-bench.json"  # its fine-tuned points as exported files: accuracy and timing, fp32/int8
FRONTIER_DIR = "frontier"  # its points, one compress build each (keyed; kept while their inputs hold)
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


def chosen_point(frontier: dict[str, Any]) -> dict[str, Any] | None:
    """The point a frontier search chose (None when it chose none)."""
    return next((p for p in frontier["points"] if p.get("target") == frontier["chosen"] and "same_as" not in p),
                None)  # fmt: skip


class BuildFileError(ConfigError):
    """A build file that is missing, corrupt, or written by something else."""


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
                     p / LATENCY_TABLE, p / FRONTIER]  # fmt: skip
        elif stage == "export":
            found = [p / ARTIFACTS, *(p / d for d in TARGET_DIRS)]
        elif stage == "bench":
            found = [
                p / BENCH,
                p / LAYER_LATENCY,
                p / OP_PROFILE,
                p / FRONTIER_BENCH,
                p / "host-bench.json",  # written by builds before bench.jsonl was the one sink
                *p.glob("device-inputs-*.npy"),
            ]
        elif stage == "report":
            found = [p / SUMMARY, *(p / f"{REPORT_STEM}{suffix}" for suffix in REPORT_SUFFIXES)]
        else:
            raise ValueError(f"unknown stage {stage!r}")
        return [f for f in found if f.exists() or f.is_symlink()]

    def invalidate(self, stage: str, *, keep: tuple[str, ...] = ()) -> list[Path]:
        """Remove ``stage``'s outputs and everything downstream of it, except the names in ``keep`` (a file keyed by
        its own inputs, reused or redone on its own: a latency table, a frontier's file timings).

        Downstream first, so that an interruption never leaves a later stage's file beside a removed input.
        """
        removed = []
        for later in reversed(STAGES[STAGES.index(stage) :]):
            for path in self.stage_outputs(later):
                if path.name in keep:
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
        return Plan.load(self.path / PLAN)

    def compress_key(self) -> str:
        """The key of the finished compress stage (its inputs' digest)."""
        return self.manifest()["inputs"]["key"]

    def check_student(self, manifest: dict[str, Any]) -> None:
        """The student file must be the one the manifest recorded: a replaced or damaged file is not this build."""
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
        path = self.path / record["path"]
        return record.get("status") in ("ok", "mismatch") and path.exists() and tree_sha256(path) == record["sha256"]

    # -- bench ---------------------------------------------------------------------------------------------
    def bench_records(self, *, current_only: bool = True) -> list[dict[str, Any]]:
        """Records of ``bench.jsonl``; with ``current_only``, only those measured on the listed artifact bytes."""
        path = self.path / BENCH
        if not path.is_file():
            return []
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BuildFileError(
                f"{path} cannot be read as bench records ({exc.__class__.__name__}: not text, or unreadable).",
                "Delete it and re-run `mobilelwt bench`.",
            ) from None
        records = []
        for number, line in enumerate(text.splitlines(), 1):
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

    def frontier(self) -> dict[str, Any] | None:
        """``frontier.json`` when the build's student is the point it chose (else None: nothing stale is shown)."""
        path = self.path / FRONTIER
        if not path.is_file():
            return None
        data = read_json(path, what="frontier", fix="Re-run with --max-drop.", required=("points", "chosen"))
        chosen = chosen_point(data)
        if chosen is None or not self.is_compressed() or chosen.get("compress_key") != self.compress_key():
            return None
        return data

    def frontier_bench_record(self) -> dict[str, Any] | None:
        """``frontier-bench.json`` as written (its key decides whether it is reused), None when absent, unreadable or
        of an older format."""
        try:
            data = read_json(self.path / FRONTIER_BENCH, what="frontier bench", fix="", required=("points",))
        except (ConfigError, OSError):
            return None
        return data if data.get("format") == FRONTIER_BENCH_FORMAT else None

    def frontier_bench(self) -> dict[str, Any] | None:
        """``frontier-bench.json`` when it was made from the current frontier's fine-tuned points and a teacher file
        that is still current (else None)."""
        path = self.path / FRONTIER_BENCH
        frontier = self.frontier()
        if frontier is None or not path.is_file():
            return None
        data = read_json(path, what="frontier bench", fix="Re-run `mobilelwt build` with --max-drop.",
                         required=("points",))  # fmt: skip
        if data.get("format") != FRONTIER_BENCH_FORMAT:
            return None  # an older record (the chosen point's file left to the build's bench): timed again
        timed = {p["target"]: p.get("compress_key") for p in data["points"]}
        fine_tuned = {p["target"]: p["compress_key"] for p in frontier["points"]
                      if p.get("trained") == "fine-tuned" and "same_as" not in p}  # fmt: skip
        if timed != fine_tuned and not data.get("skipped"):  # a skip says why for the whole frontier
            return None
        teacher = data.get("teacher")
        if teacher is not None:
            home = BuildDir(self.path / teacher["dir"])  # the point whose build exported the teacher's file
            listed = {a["path"]: a for a in home.artifacts()["artifacts"]}
            current = listed.get(str(Path(teacher["artifact"]).relative_to(teacher["dir"])))
            if current is None or current.get("sha256") != teacher["sha256"] or not home.current_artifact(current):
                return None
        return data

    def layer_latency(self) -> dict[str, Any] | None:
        path = self.path / LAYER_LATENCY
        if not path.is_file():
            return None
        data = read_json(path, what="per-layer latency", fix="Re-run `mobilelwt bench --layers`.")
        if self.is_compressed() and data.get("compress_key") != self.compress_key():
            return None
        return data
