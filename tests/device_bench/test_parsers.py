from pathlib import Path

import pytest

from device_bench.parsers import RunnerOutputError, parse_benchmark_model, parse_executor_runner
from targets.litert_profiler import ProfilerError

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_executor_runner_with_timing_line() -> None:
    result = parse_executor_runner(sample("executor_runner_v0.7.txt"))
    assert result["iterations"] == 50 and result["total_ms"] == pytest.approx(1237.451)
    assert result["mean_ms"] == pytest.approx(24.74902)


def test_executor_runner_old_build_completes_without_time() -> None:
    result = parse_executor_runner(sample("executor_runner_v0.2.txt"))
    assert result["iterations"] == 1 and result["mean_ms"] is None


def test_executor_runner_counted_completion_without_a_total_time() -> None:
    # the variant current builds print: a count, no total; per-run lines give the times when present
    counted = parse_executor_runner("I 00:00:01.2 executor_runner.cpp:258] Model executed successfully 10 time(s).\n")
    assert counted["iterations"] == 10 and counted["mean_ms"] is None
    timed = parse_executor_runner("Run 0 took 2.5 ms\nRun 1 took 3.5 ms\nModel executed successfully 2 time(s).\n")
    assert timed["iterations"] == 2 and timed["mean_ms"] == 3.0 and timed["samples_ms"] == [2.5, 3.5]


def test_executor_runner_failure_and_truncated_output_are_errors() -> None:
    with pytest.raises(RunnerOutputError, match="Loading of method forward failed"):
        parse_executor_runner(sample("executor_runner_failed.txt"))
    truncated = sample("executor_runner_v0.7.txt").split("Inputs prepared.")[0]  # device vanished mid-run
    with pytest.raises(RunnerOutputError, match="did not complete"):
        parse_executor_runner(truncated)


def test_executor_runner_1_5_real_output() -> None:
    # captured from executor_runner built here from ExecuTorch's examples/portable against the 1.5.1 wheel
    # (event tracer on, XNNPACK linked), five executions of the default digits student
    result = parse_executor_runner(sample("executor_runner_1.5.1.txt"))
    assert result["iterations"] == 5 and result["total_ms"] == pytest.approx(12.893153)
    assert result["samples_ms"] == pytest.approx([10.863706, 0.593259, 0.464608, 0.43853, 0.53305])
    assert result["load_ms"] == pytest.approx(23.57554)
    assert result["etdump"] == "/tmp/etr/s.etdump"


@pytest.mark.parametrize(
    ("name", "cause", "fix"),
    [
        ("executor_runner_1.5.1_missing.txt", "Failed to open /nonexistent.pte", "pushed to that path"),
        ("executor_runner_1.5.1_truncated.txt", "File size is too small", "cut short"),
        ("executor_runner_1.5.1_no_backend.txt", "Backend XnnpackBackend is not registered", "backend linked in"),
        ("executor_runner_failed.txt", "Missing operator: [0] aten::_fft_r2c.out; In function main()", "kernel"),
    ],
)
def test_executor_runner_real_failures_name_the_cause_and_fix(name, cause, fix) -> None:
    with pytest.raises(RunnerOutputError) as failure:
        parse_executor_runner(sample(name))
    assert cause in failure.value.problem and fix in failure.value.fix


def test_executor_runner_etdump_of_a_real_run_is_read() -> None:
    # the ETDump that run wrote: the Inspector reads it; the student's XNNPACK operators and the pooling that
    # ran on the portable kernels between two delegate calls
    from device_bench.profile import summarize_etdump

    profile = summarize_etdump(SAMPLES / "executor_runner_1.5.1.etdump", runs=5)
    ops = {row["op"]: row for row in profile["ops"]}
    assert profile["delegate_calls_per_run"] == 2 and profile["execute_ms"] > 0
    assert ops["Fully Connected (NC, F32) GEMM"]["where"] == "delegate"
    assert profile["undelegated_ops"] == ["_adaptive_avg_pool2d"] and profile["undelegated_compute_ops"] == []
    assert profile["method_init_ms"] > 0


def test_a_file_that_is_no_etdump_is_one_clear_error(tmp_path) -> None:
    from device_bench.profile import summarize_etdump

    (tmp_path / "x.etdump").write_bytes(b"not an etdump")
    with pytest.raises(RunnerOutputError, match="not an ETDump"):
        summarize_etdump(tmp_path / "x.etdump", runs=1)


@pytest.mark.parametrize(
    ("name", "mean", "runs", "median"),
    [("benchmark_model_2.16.txt", 9.34421, 107, 9.301), ("benchmark_model_2.4.txt", 20.3879, 50, None)],
)
def test_benchmark_model_versions(name, mean, runs, median) -> None:
    result = parse_benchmark_model(sample(name))
    assert result["mean_ms"] == pytest.approx(mean) and result["runs"] == runs and result["median_ms"] == median
    assert result["init_ms"] > 0 and result["first_inference_ms"] > result["mean_ms"]


def test_benchmark_model_memory_lines() -> None:
    result = parse_benchmark_model(sample("benchmark_model_2.16.txt"))
    assert result["memory_init_mb"] == pytest.approx(52.8711) and result["memory_peak_mb"] == pytest.approx(63.4219)


def test_benchmark_model_failure_names_the_error() -> None:
    with pytest.raises(RunnerOutputError, match="Could not open '/data/local/tmp/missing.tflite'"):
        parse_benchmark_model(sample("benchmark_model_failed.txt"))


def test_litert_profile_summary_real_output() -> None:
    # captured from LiteRT 2.3's profiler here (ai-edge-litert's libLiteRt.so through targets.litert_profiler),
    # ten runs of the default digits student on 2 threads; the same summariser prints benchmark_model's op profile
    from targets.litert_profiler import parse_op_profile

    profile = parse_op_profile(sample("litert_2.3_profile_summary.txt"), runs=10)
    ops = {row["op"]: row for row in profile["ops"]}
    assert len(profile["nodes"]) == 26 and profile["execute_ms"] == pytest.approx(1.265, abs=1e-6)
    assert ops["Convolution (NHWC, F32) IGEMM"] == {**ops["Convolution (NHWC, F32) IGEMM"], "where": "delegate",
                                                     "instances": 7}  # fmt: skip
    assert ops["Convolution (NHWC, F32) IGEMM"]["mean_ms"] == pytest.approx(1.058)
    # adaptive_avg_pool2d became TFLite builtins between two XNNPACK partitions
    assert profile["delegate_calls_per_run"] == 2
    assert set(profile["undelegated_ops"]) == {"GATHER_ND", "SELECT_V2", "BROADCAST_TO", "CONCATENATION", "RESHAPE"}
    assert profile["undelegated_compute_ops"] == []
    first = profile["nodes"][0]
    assert first["type"] == "Delegate/Transpose (ND, X32) Transpose" and first["times_called"] == 20


def test_benchmark_model_op_profile_without_a_start_column_and_a_builtin_conv() -> None:
    # older benchmark_model builds print no [start] column; a convolution outside the delegate is compute
    from targets.litert_profiler import parse_op_profile

    text = (
        "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
        "============================== Run Order ==============================\n"
        "\t             [node type]\t  [first]\t  [avg ms]\t      [%]\t    [cdf%]\t  [mem KB]\t[times called]\t[Name]\n"
        "\t                 CONV_2D\t    2.000\t     1.500\t  75.000%\t   75.000%\t     0.000\t        1\t[conv]:0\n"
        "\t   TfLiteXNNPackDelegate\t    0.600\t     0.500\t  25.000%\t  100.000%\t     0.000\t        1\t[fc]:1\n"
    )
    profile = parse_op_profile(text, runs=50)
    assert profile["execute_ms"] == pytest.approx(2.0) and profile["undelegated_compute_ops"] == ["CONV_2D"]
    assert {op["op"]: op["where"] for op in profile["ops"]} == {
        "CONV_2D": "builtin",
        "TfLiteXNNPackDelegate": "delegate",
    }
    with pytest.raises(ProfilerError, match="no 'Run Order' table"):
        parse_op_profile("INFO: Inference timings in us: Init: 1, First inference: 2\n")
