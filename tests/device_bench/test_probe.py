"""Latency probes on the real host runtimes: interleaved timing, intervals, int8 timing, table facts."""

import pytest
import torch
from torch import nn

from device_bench.probe import HostProbe, make_probe
from device_bench.protocol import TimingPolicy
from targets import TargetError

QUICK = TimingPolicy(max_seconds=3.0, min_batches=2)


@pytest.mark.parametrize("runtime", ["executorch", "litert"])
def test_host_probe_times_a_layer_and_its_candidates_and_compares_networks(runtime) -> None:
    probe = HostProbe(runtime, threads=1, policy=QUICK)
    layer = nn.Conv2d(32, 64, 3, padding=1)
    cheap = nn.Sequential(nn.Conv2d(32, 8, (3, 1), padding=(1, 0)), nn.Conv2d(8, 64, (1, 3), padding=(0, 1)))
    timed = probe.time_modules({"teacher": layer, "cheap": cheap}, (1, 32, 32, 32), reference="teacher")
    assert timed["teacher"]["median_ms"] > 0 and timed["cheap"]["median_ms"] > 0
    assert timed["cheap"]["speedup"] > 1.0 and timed["cheap"]["runs"] >= 2 and timed["cheap"]["cache"] == "cold"
    compared = probe.compare(nn.Sequential(layer), nn.Sequential(cheap), (1, 32, 32, 32), target=1.2)
    assert compared["speedup_ci95"][0] <= compared["speedup"] <= compared["speedup_ci95"][1]
    assert compared["batches"] >= 2 and compared["cache"] == "cold" and compared["stopped"]
    assert probe.identity()["device"] == "host" and probe.context()["runtime"] == runtime
    assert probe.context()["cache"] == "cold"  # a table timed cold never serves a warm plan
    assert probe.context()["runtime_version"]


def test_int8_tables_time_quantised_layers() -> None:
    fp32, int8 = HostProbe("executorch", threads=1, policy=QUICK), HostProbe("executorch", precision="int8",
                                                                              threads=1, policy=QUICK)  # fmt: skip
    layer = {"teacher": nn.Linear(1024, 1024)}
    a = fp32.time_modules(layer, (1, 1024), reference="teacher")["teacher"]["median_ms"]
    b = int8.time_modules(layer, (1, 1024), reference="teacher")["teacher"]["median_ms"]
    assert a > 0 and b > 0 and int8.context()["precision"] == "int8" != fp32.context()["precision"]


def test_unknown_runtime_or_precision_is_a_user_error() -> None:
    with pytest.raises(TargetError, match="Unknown runtime 'tvm'"):
        make_probe("tvm")
    with pytest.raises(TargetError, match="has no fp16 timing"):
        make_probe("executorch", precision="fp16")


def test_probe_layer_time_is_positive() -> None:
    probe = HostProbe("executorch", threads=1)
    assert probe.layer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval(), (1, 3, 32, 32)) > 0
    assert torch.get_num_threads() >= 1


def test_the_teacher_is_lowered_once_while_its_weights_stay_the_same(monkeypatch) -> None:
    import device_bench.probe as probe_module

    lowered = []
    real = probe_module.host_runner

    def counting(runtime, model, *args, **kwargs):
        lowered.append(model)
        return real(runtime, model, *args, **kwargs)

    monkeypatch.setattr(probe_module, "host_runner", counting)
    probe = HostProbe("executorch", threads=1, policy=TimingPolicy(max_seconds=0.5, min_batches=1))
    teacher = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    students = [nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU()) for _ in range(2)]
    for student in students:  # a plan's rounds: a new student each time, the same teacher
        probe.compare(teacher, student, (1, 8, 16, 16))
    assert [id(m) for m in lowered] == [id(teacher), id(students[0]), id(students[1])] and probe.lowered_reused == 1
    probe.compare(teacher, students[1], (1, 8, 16, 16))  # a confirming timing: the student is lowered afresh
    assert lowered[3:] == [students[1]]
    with torch.no_grad():
        teacher[0].weight.mul_(2.0)  # a weight changed in place: another program
    probe.compare(teacher, students[1], (1, 8, 16, 16))
    assert lowered[4:] == [teacher, students[1]]
    probe.compare(teacher, students[1], (1, 8, 32, 32))  # another input shape: another program
    assert lowered[6:] == [teacher, students[1]]
    probe.time_modules({"teacher": teacher, "cheap": students[0]}, (1, 8, 16, 16), reference="teacher")
    assert lowered[8:] == [teacher, students[0]]  # a table's layers are lowered once anyway: not kept


def test_a_probes_next_timing_of_the_same_teacher_judges_the_machine_speed_over_its_earlier_batches() -> None:
    import contextlib

    from device_bench.load import NoLoadMeter
    from device_bench.probe import HISTORY_KEPT, _Probe

    class ScriptedProbe(_Probe):
        """Batches from a script: the teacher at 7.3 ms (4.6x), or 4.5 ms (3.6x) while the machine runs faster."""

        def __init__(self, speeds: list[str]) -> None:
            super().__init__("executorch", policy=TimingPolicy(max_seconds=60.0, min_batches=3))
            self.speeds = iter(speeds)

        def meter(self):
            return NoLoadMeter()

        @contextlib.contextmanager
        def _batches(self, modules, input_shape, *, kept=None):
            def batch():
                if next(self.speeds) == "fast":
                    return {"teacher": [4.5, 4.5, 4.6], "student": [1.25, 1.25, 1.26]}
                return {"teacher": [7.3, 7.3, 7.35], "student": [1.58, 1.59, 1.59]}

            yield batch

    teacher, other = nn.Linear(4, 4), nn.Linear(4, 4)
    probe = ScriptedProbe(["slow"] * 6 + ["fast"] * 3 + ["slow"] * 3 + ["fast"] * 3)
    for _ in range(2):
        first = probe.compare(teacher, nn.Linear(4, 2), (1, 4))
        assert first["speedup"] == pytest.approx(7.3 / 1.59, rel=0.01) and first["batches"] == 3
    # the next round of the same teacher starts in a fast stretch: it waits for the speed the others were timed at
    second = probe.compare(teacher, nn.Linear(4, 2), (1, 4))
    assert second["speedup"] == pytest.approx(7.3 / 1.59, rel=0.01) and second["batches"] == 6
    assert second["state"]["shifted_batches"] == 3 and second["state"]["earlier_batches"] == 6
    # another teacher has no history here: its fast batches decide at once
    third = probe.compare(other, nn.Linear(4, 2), (1, 4))
    assert third["speedup"] == pytest.approx(4.5 / 1.25, rel=0.01) and third["state"]["earlier_batches"] == 0

    long_run = ScriptedProbe(["slow"] * 10 * HISTORY_KEPT)
    for _ in range(HISTORY_KEPT):
        long_run.compare(teacher, nn.Linear(4, 2), (1, 4))
    assert long_run.compare(teacher, nn.Linear(4, 2), (1, 4))["state"]["earlier_batches"] == HISTORY_KEPT
