"""The comparison report from recorded build directories: exact table values, round trips, a real browser."""

import json
import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from device_bench.report import Budget, load_report_table
from device_bench.report.render import pareto_front, read_json_report
from mobilelwt.app.reports import make_report
from mobilelwt.errors import ConfigError
from tests.mobilelwt.app.cli.test_cli import assert_user_error, invoke


def _artifact(role, fmt, runtime, precision, path, *, top1=None, status="ok", kind="numeric", reason=None):
    record = {"target": "android", "role": role, "model": "alexnet", "format": fmt, "runtime": runtime,
              "precision": precision, "path": path, "status": status,
              "bytes": 1000 if role == "student" else 4000, "sha256": f"sha-{path}"}  # fmt: skip
    if reason:
        record["reason"] = reason
    elif kind == "numeric":
        record["validation"] = {"kind": "numeric", "images": 64, "top1": top1, "top5": 99.0, "max_abs_diff": 1e-6,
                                "sqnr_db": 110.0, "top1_agreement": 1.0, "passed": True, "failures": []}  # fmt: skip
    else:
        record["validation"] = {"kind": "structural", "numeric": "needs macOS", "passed": True, "failures": []}
    return record


def _bench(path, role, runtime, median, device="host", status="ok", reason=None):
    record = {"artifact": path, "artifact_sha256": f"sha-{path}", "role": role, "runtime": runtime,
              "precision": "fp32", "device": device, "status": status}  # fmt: skip
    if median is not None:
        record.update(median_ms=median, p90_ms=median * 1.1, cv=0.05)
    if reason:
        record["reason"] = reason
    return record


def write_build(root, name="b1", model="alexnet"):
    d = root / name
    d.mkdir(parents=True)
    metrics = {
        "model": model,
        "teacher": {"top1": 90.0, "top5": 99.5, "macs": 1000, "params": 100, "images": 500},
        "student": {"top1": 89.0, "top5": 99.0, "macs": 250, "params": 30, "images": 500},
        "layers": {"features.3": {"module": "lowrank_spatial", "rank": 8, "teacher_macs": 600, "student_macs": 100}},
        "inputs": {"key": "k1"},
    }
    artifacts = [
        _artifact("teacher", "pte", "executorch", "fp32", "android/t.pte", top1=90.0),
        _artifact("student", "pte", "executorch", "fp32", "android/s.pte", top1=88.5),
        _artifact("teacher", "tflite", "litert", "fp32", "android/t.tflite", top1=90.0),
        _artifact("student", "tflite", "litert", "fp32", "android/s.tflite", top1=89.5),
        _artifact("student", "mlpackage", "coreml", "fp16", "ios/s.mlpackage", kind="structural"),
        _artifact(
            "student",
            "tflite",
            "litert",
            "int8",
            "android/s-int8.tflite",
            status="failed",
            reason="litert-torch could not lower the model: operator abs",
        ),  # fmt: skip
    ]
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "artifacts.json").write_text(json.dumps({"compress_key": "k1", "artifacts": artifacts}))
    machine = {"device": "host", "cpu": "Test CPU 9000", "cpu_count": 2, "platform": "Linux",
               "runtimes": {"executorch": "1.5.1"}}  # fmt: skip
    host = [{**_bench("android/t.pte", "teacher", "executorch", 10.0), "threads": 2, "environment": machine},
            {**_bench("android/s.pte", "student", "executorch", 2.5), "speedup_ci95": [3.6, 4.3], "load_ms": 12.5,
             "model_rss_mb": 48.0, "stable": True},
            _bench("android/t.tflite", "teacher", "litert", 8.0),
            _bench("android/s.tflite", "student", "litert", 4.0)]  # fmt: skip
    phone = [_bench("android/t.pte", "teacher", "executorch", 40.0, device="R5CT"),
             _bench("android/s.pte", "student", "executorch", 16.0, device="R5CT"),
             _bench("android/s.tflite", "student", "litert", None, device="R5CT", status="failed",
                    reason="device R5CT disconnected during the run")]  # fmt: skip
    (d / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in host + phone))
    return d


def _row(table, **where):
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_table_speedups_ratios_and_deltas_are_exact(tmp_path) -> None:
    table = load_report_table([write_build(tmp_path)], Budget(max_ms=3.0, max_drop=2.0))
    s = _row(table, role="student", runtime="executorch", device="host")
    assert s.speedup == 4.0 and s.mac_ratio == 4.0 and s.realised_ratio == 1.0
    assert s.top1_delta == pytest.approx(-1.5) and s.top5_delta == 0.0 and bool(s.meets_budget)
    lite = _row(table, role="student", runtime="litert", device="host", precision="fp32")
    assert lite.speedup == 2.0 and lite.realised_ratio == 0.5 and lite.top1_delta == pytest.approx(-0.5)
    assert lite.meets_budget is not None and not lite.meets_budget  # 4 ms > 3 ms
    phone = _row(table, role="student", runtime="executorch", device="R5CT")
    assert phone.speedup == 2.5 and phone.latency_p90_ms == pytest.approx(17.6)
    teacher = _row(table, role="teacher", runtime="executorch", device="host")
    assert teacher.speedup == 1.0 and teacher.top1_delta == 0.0


def test_headline_box_and_profile_columns(tmp_path) -> None:
    table = load_report_table([write_build(tmp_path)])
    s = _row(table, role="student", runtime="executorch", device="host")
    assert (s.speedup_ci_low, s.speedup_ci_high, s.load_ms, s.model_rss_mb) == (3.6, 4.3, 12.5, 48.0)
    assert math.isnan(_row(table, role="student", runtime="litert", device="host", precision="fp32").load_ms)
    from device_bench.report.render import headline_lines

    lines = headline_lines(table)
    host_et = next(line for line in lines if "executorch fp32 (host)" in line)
    assert "4.00× faster (95% CI 3.60–4.30×), at 4.00× fewer MACs" in host_et and "load 12.50 ms" in host_et
    assert "model memory 48.00 MB" in host_et and "top-1 -1.50 points" in host_et
    assert any("(R5CT)" in line for line in lines)
    markdown = make_report([write_build(tmp_path, "md")], out=tmp_path / "r", formats=("md",))["files"][0]
    assert "**Headline**" in markdown.read_text() and "3.60–4.30×" in markdown.read_text()
    assert "host: Test CPU 9000, 2 cores, Linux; 2 thread(s); executorch 1.5.1" in markdown.read_text()
    assert "artifact, 64 val images" in markdown.read_text()  # where each top-1 comes from


def _with_target(build, value: float, planned: float = 4.1) -> None:
    metrics = json.loads((build / "metrics.json").read_text())
    metrics["plan_target"] = {"kind": "measured speedup", "value": value, "planner": "latency", "cache": "cold",
                              "probe": "executorch fp32 host, 2 threads", "measured_speedup": planned,
                              "measured_ci95": [planned * 0.96, planned * 1.04], "verified": True}  # fmt: skip
    (build / "metrics.json").write_text(json.dumps(metrics))


def _timed(build, *, quiet: bool = True, converged: bool = True, state: dict | None = None) -> None:
    records = [json.loads(line) for line in (build / "bench.jsonl").read_text().splitlines()]
    for r in records:
        if r["status"] == "ok":
            r.update(cache="cold", timing={"converged": converged, "load": {"quiet": quiet}, "state": state})
    (build / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    ("target", "verdict"),
    [
        (4.0, "target 4× met (planned 4.10×)"),
        (4.2, "target 4.2× met (planned 4.10×)"),
        (4.5, "below the 4.5× target (planned 4.10× before training; re-plan with --speedup 5.06 to land on it)"),
    ],
)
def test_the_headline_says_whether_the_files_keep_the_plans_promise(tmp_path, target, verdict) -> None:
    from device_bench.report.render import headline_lines

    build = write_build(tmp_path)
    _with_target(build, target)
    _timed(build)
    host_et = next(line for line in headline_lines(load_report_table([build])) if "executorch fp32 (host)" in line)
    # delivered 4.00x (3.60-4.30) by the files, cold; the plan's promise and the planner's number beside it
    assert f"4.00× faster (95% CI 3.60–4.30×, cold); {verdict}" in host_et


def test_a_speedup_timed_under_load_or_not_converged_is_never_shown_as_quiet(tmp_path) -> None:
    from device_bench.report.render import headline_lines

    build = write_build(tmp_path)
    _timed(build, quiet=False, converged=False)
    host_et = next(line for line in headline_lines(load_report_table([build])) if "executorch fp32 (host)" in line)
    assert "measured under load: re-measure on a quiet machine" in host_et
    assert "interval not within the width asked by the time cap" in host_et


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (
            {"steady": True, "shifted_processes": 1, "shifted_batches": 0},
            "1 stretch(es) timed at another machine speed",
        ),
        (
            {"steady": True, "shifted_processes": 0, "shifted_batches": 3},
            "3 stretch(es) timed at another machine speed",
        ),
        (
            {"steady": False, "shifted_processes": 0, "shifted_batches": 0},
            "the machine kept changing speed: re-measure",
        ),
        ({"steady": True, "shifted_processes": 0, "shifted_batches": 0}, None),
    ],
)
def test_the_headline_says_when_the_machine_changed_speed_during_the_timing(tmp_path, state, said) -> None:
    from device_bench.report.render import headline_lines

    build = write_build(tmp_path)
    _timed(build, state=state)
    host_et = next(line for line in headline_lines(load_report_table([build])) if "executorch fp32 (host)" in line)
    if said is None:
        assert "machine" not in host_et and "4.00× faster (95% CI 3.60–4.30×, cold)" in host_et
    else:
        assert said in host_et


def test_missing_and_failed_parts_are_shown_as_such_never_zero(tmp_path) -> None:
    table = load_report_table([write_build(tmp_path)])
    coreml = _row(table, runtime="coreml")
    assert math.isnan(coreml.latency_median_ms) and math.isnan(coreml.speedup) and "Apple" in coreml.note
    assert coreml.top1 == 89.0 and "PyTorch" in coreml.accuracy_source and coreml.mac_ratio == 4.0
    failed = _row(table, precision="int8")
    assert failed.status == "failed" and "operator abs" in failed.note and math.isnan(failed.latency_median_ms)
    gone = _row(table, runtime="litert", device="R5CT")
    assert gone.status == "failed" and "disconnected" in gone.note and math.isnan(gone.latency_median_ms)
    assert _row(table, runtime="coreml").meets_budget is None  # no budget asked for


def test_numbers_of_files_that_are_no_longer_current_are_never_shown(tmp_path) -> None:
    build = write_build(tmp_path)
    listing = json.loads((build / "artifacts.json").read_text())
    next(a for a in listing["artifacts"] if a["path"] == "android/s.pte")["sha256"] = "sha-of-a-re-export"
    (build / "artifacts.json").write_text(json.dumps(listing))
    student = _row(load_report_table([build]), role="student", runtime="executorch")  # one row: no device record
    assert math.isnan(student.latency_median_ms) and math.isnan(student.speedup) and "not measured" in student.note

    (build / "student.pt").write_bytes(b"a newer student")
    manifest = {"teacher": {}, "settings": {}, "files": {}, "inputs": {"key": "k1"}}
    (build / "manifest.json").write_text(json.dumps(manifest))
    listing["compress_key"] = "k0"  # exported from an earlier student
    (build / "artifacts.json").write_text(json.dumps(listing))
    table = load_report_table([build])
    assert set(table["format"]) == {"pytorch"} and table["latency_median_ms"].isna().all()

    (build / "metrics.json").write_text(json.dumps({**json.loads((build / "metrics.json").read_text()),
                                                    "inputs": {"key": "k0"}}))  # fmt: skip
    with pytest.raises(ConfigError, match="does not belong to this build's student"):
        load_report_table([build])


def test_csv_and_json_round_trip(tmp_path) -> None:
    build = write_build(tmp_path)
    result = make_report([build], out=tmp_path / "r", formats=("csv", "json", "md"), budget_ms=3.0, max_drop=2.0)
    table = result["table"]
    from_csv = pd.read_csv(tmp_path / "r.csv")
    assert list(from_csv.columns) == list(table.columns) and len(from_csv) == len(table)
    assert np.allclose(from_csv["speedup"], table["speedup"], equal_nan=True)
    from_json = read_json_report((tmp_path / "r.json").read_text())
    assert np.allclose(from_json["latency_median_ms"], table["latency_median_ms"], equal_nan=True)
    assert from_json["note"].tolist() == table["note"].tolist()
    markdown = (tmp_path / "r.md").read_text()
    assert "| alexnet | student | pte | fp32 | host |" in markdown and "4.00×" in markdown and "n/a" in markdown
    assert any("4.00× faster" in line and "meets budget: yes" in line for line in result["headline"])


def test_several_builds_compare_in_one_report(tmp_path) -> None:
    a, b = write_build(tmp_path, "a"), write_build(tmp_path, "b", model="vgg16")
    table = load_report_table([a, b])
    assert set(table["build"]) == {"a", "b"} and set(table["model"]) == {"alexnet", "vgg16"}
    assert (table[table["role"] == "student"]["speedup"].dropna() > 1).all()


def test_pareto_front() -> None:
    points = [(10.0, 90.0), (2.5, 88.0), (4.0, 89.5), (5.0, 89.0), (12.0, 90.0)]
    assert pareto_front(points) == [(2.5, 88.0), (4.0, 89.5), (10.0, 90.0)]


def test_report_command_and_errors(tmp_path) -> None:
    build = write_build(tmp_path)
    result = invoke("report", build, "--format", "md,json", "--budget-ms", "3", "--max-drop", "2")
    assert result.exit_code == 0, result.output
    assert (build / "report.md").is_file() and (build / "report.json").is_file()
    assert not (build / "report.html").exists()
    assert_user_error(invoke("report", build, "--format", "pdf"), "Unknown --format pdf")
    assert_user_error(invoke("report", tmp_path / "missing"), "does not exist")
    assert_user_error(invoke("report", tmp_path), "has no metrics.json")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, page, *args):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_report_renders_in_a_real_browser(tmp_path) -> None:
    build = write_build(tmp_path, model="<script>alert('x')</script>net")
    html_path = make_report([build], out=tmp_path / "report", formats=("html",))["files"][0]
    text = html_path.read_text()
    assert "<script" not in text and "&lt;script&gt;" in text  # escaped, inert
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") == 3  # scatter, speedup, per-layer

    dom = _chromium(tmp_path, html_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="headline"' in dom.stdout and "4.00× faster (95% CI 3.60–4.30×)" in dom.stdout
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    assert 'id="report"' in dom.stdout and "<script" not in dom.stdout and "&lt;script&gt;" in dom.stdout
    assert dom.stdout.count("<img") == 3

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, html_path, "--window-size=1400,1600", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.02  # text, table rules and plots, not a blank page

    broken = tmp_path / "broken.html"  # the console check itself catches a failing page
    broken.write_text("<html><body><script>console.error('boom')</script></body></html>")
    assert _console_errors(_chromium(tmp_path, broken, "--dump-dom").stderr)


def test_a_layer_profiled_at_zero_ms_shows_its_number_not_n_a() -> None:
    from device_bench.report.render import _network_cells

    cell = _network_cells({"layer": "features.3"}, {"teacher": {"features.3": 0.41}, "student": {"features.3": 0.0}})
    assert "0.410 → 0.000 ms" in cell and "n/a" not in cell
    missing = _network_cells({"layer": "features.3"}, {"teacher": {"features.3": 0.41}})
    assert "n/a" in missing


def _frontier_point(target, speedup, top1, *, key="other", trained="fine-tuned"):
    return {"target": target, "dir": f"frontier/x{target:g}", "speedup": speedup,
            "speedup_ci95": [speedup * 0.96, speedup * 1.04], "speedup_kind": "measured speedup",
            "mac_speedup": speedup * 1.5, "top1": top1, "top5": 99.0, "drop": 90.0 - top1, "trained": trained,
            "compress_key": key}  # fmt: skip


def _with_frontier(root, name, chosen_key="k1"):
    d = write_build(root, name)
    (d / "student.pt").write_bytes(b"weights")
    files = {"student.pt": {"sha256": __import__("hashlib").sha256(b"weights").hexdigest()}}
    (d / "manifest.json").write_text(json.dumps({"teacher": {}, "settings": {}, "inputs": {"key": "k1"},
                                                 "files": files}))  # fmt: skip
    longer = {"longer_distillation": True, "finetune_epochs": 4}  # missed the budget by little: distilled longer
    points = [_frontier_point(2.0, 2.1, 89.9), {**_frontier_point(3.0, 3.2, 89.2, key=chosen_key), **longer},
              _frontier_point(4.5, 4.4, 86.0, trained="layer-wise only")]  # fmt: skip
    frontier = {"format": "mobilelwt.frontier/1", "key": "f1", "model": "alexnet", "input_size": 64, "max_drop": 1.0,
                "speedup_kind": "measured speedup", "teacher": {"top1": 90.0, "top5": 99.5, "images": 500},
                "latency": {"runtime": "executorch", "device": "host", "precision": "fp32", "threads": 2,
                            "cache": "cold"},
                "points": points, "chosen": 3.0, "why": "the fastest student within 1 points: 3.20×"}  # fmt: skip
    (d / "frontier.json").write_text(json.dumps(frontier))
    return d


def test_the_report_overlays_the_frontiers_of_several_builds_and_hides_a_stale_one(tmp_path) -> None:
    first, second = _with_frontier(tmp_path, "a"), _with_frontier(tmp_path, "b")
    stale = _with_frontier(tmp_path, "c", chosen_key="an older student")  # the build's student is not that point
    result = make_report([first, second, stale], out=tmp_path / "r", formats=("md", "html", "json"))
    md = (tmp_path / "r.md").read_text()
    assert md.count("**Frontier**") == 2 and "**Frontier** c:" not in md
    assert "3.20× (95% CI 3.07–3.33): top-1 89.20 % (-0.80)" in md and "← chosen" in md
    assert "layer-wise only" in md and "fine-tuned, distilled longer (4 epochs) ← chosen" in md
    html = (tmp_path / "r.html").read_text()
    assert html.count('alt="frontier"') == 1  # one plot, both builds overlaid
    assert set(json.loads((tmp_path / "r.json").read_text())["frontiers"]) == {"a", "b"}
    assert result["files"]


def _int8(speedup, top1, drop):
    return {"artifact": "x.pte", "status": "ok", "speedup": speedup,
            "speedup_ci95": [speedup * 0.95, speedup * 1.05], "top1": top1, "images": 200, "drop": drop,
            "drop_ci95": [drop - 0.5, drop + 0.5], "cache": "cold"}  # fmt: skip


def test_the_frontier_shows_its_files_fp32_and_int8_once_each_and_drops_a_stale_timing(tmp_path) -> None:
    build = _with_frontier(tmp_path, "a")
    frontier = json.loads((build / "frontier.json").read_text())
    frontier["choice"] = {"files": True, "planner_chose": 3.0, "reason": "its file ran fastest too"}
    (build / "frontier.json").write_text(json.dumps(frontier))
    files = {"format": "mobilelwt.frontier-bench/2", "runtime": "executorch", "threads": 2, "cache": "cold",
             "teacher": None,
             "points": [{"target": 2.0, "compress_key": "other", "fp32": {**_int8(2.6, 89.5, 0.5), "artifact": "y.pte"},
                         "int8": _int8(5.1, 88.0, 2.0)},
                        {"target": 3.0, "compress_key": "k1", "fp32": {**_int8(3.4, 89.3, 0.7), "artifact": "z.pte"},
                         "int8": _int8(7.3, 87.5, 2.5)}]}  # fmt: skip
    (build / "frontier-bench.json").write_text(json.dumps(files))
    make_report([build], out=tmp_path / "r", formats=("md", "html"))
    md = (tmp_path / "r.md").read_text()
    assert "files timed against the teacher's fp32 file: executorch, 2 threads, cold cache" in md
    # a fine-tuned point is shown at its file's speedup, the planner's beside it; its int8 file on the same line
    assert "2.60× (95% CI 2.47–2.73) fp32 file (planned 2.10×): top-1 89.90 %" in md
    assert "int8 file 5.10× (95% CI 4.84–5.35), top-1 88.00 % (-2.00, 95% CI -2.50 to -1.50) on 200 images" in md
    # the chosen point's fp32 file: without the build's own bench record, the side-by-side run's number stands
    assert "3.40× (95% CI 3.23–3.57) fp32 file (planned 3.20×)" in md and "int8 file 7.30×" in md
    # the sentence quotes the files and says that they chose
    assert "within 1 points: 3.40× (95% CI 3.23–3.57)" in md
    assert "chosen on the points' files timed side by side: its file ran fastest too" in md
    assert "▲ int8" not in md and 'alt="frontier"' in (tmp_path / "r.html").read_text()

    files["points"][0]["compress_key"] = "an older student"  # files of another point: the timing is not shown
    (build / "frontier-bench.json").write_text(json.dumps(files))
    make_report([build], out=tmp_path / "r", formats=("md",))
    md = (tmp_path / "r.md").read_text()
    assert "int8 file" not in md and "2.10× (95% CI" in md
    files["points"][0]["compress_key"] = "other"
    (build / "frontier-bench.json").write_text(json.dumps({**files, "format": "mobilelwt.frontier-bench/1"}))
    make_report([build], out=tmp_path / "r", formats=("md",))
    assert "int8 file" not in (tmp_path / "r.md").read_text()  # an older format's record: timed again, not shown

    skipped = {"format": "mobilelwt.frontier-bench/2", "runtime": "executorch", "threads": 2, "cache": "cold",
               "points": [], "skipped": "the teacher's fp32 executorch file did not export and validate"}  # fmt: skip
    (build / "frontier-bench.json").write_text(json.dumps(skipped))
    make_report([build], out=tmp_path / "r", formats=("md",))
    assert "files not timed: the teacher's fp32 executorch file did not export" in (tmp_path / "r.md").read_text()


def test_a_plan_sentence_says_a_frontier_rungs_band_and_not_a_users_narrow_one() -> None:
    from device_bench.report.table import plan_sentence

    target = {"kind": "measured speedup", "value": 4.0, "planner": "latency", "probe": "executorch fp32 host",
              "measured_speedup": 5.1, "measured_ci95": [4.9, 5.3], "band": 0.5}  # fmt: skip
    assert "a frontier point: anything from 4× to 6× met it" in plan_sentence(target)
    assert "frontier rung" not in plan_sentence({**target, "band": 0.05})
