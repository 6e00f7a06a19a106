"""One check per kind of value: the rules every command's options share."""

import os

import pytest

from mobilelwt import checks
from mobilelwt.errors import ConfigError


def test_an_output_is_none_of_the_inputs(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    weights = tmp_path / "models" / "teacher.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    for bad, needle in [(data, "the input folder"), (data / "run", "inside the input folder"),
                        (weights, "the input"), (weights.parent, "the folder of the input")]:  # fmt: skip
        with pytest.raises(ConfigError, match=needle):
            checks.output_path(bad, folders=(data,), files=(weights,))
    assert checks.output_path(tmp_path / "runs" / "b", folders=(data,), files=(weights,)) == tmp_path / "runs" / "b"


@pytest.mark.parametrize(
    ("path", "needle"), [("", "is empty"), ("   ", "is empty"), ("/proc/x", "virtual filesystem"), ("/sys", "virtual")]
)
def test_an_output_path_that_cannot_be_a_build_is_refused(path, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        checks.output_path(path)


def test_numbers_of_each_kind() -> None:
    for value in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(ConfigError, match="--lr must be a finite number > 0"):
            checks.positive(value, "--lr")
    with pytest.raises(ConfigError, match="from 0 to 9223372036854775807"):
        checks.seed(10**23)
    with pytest.raises(ConfigError) as info:
        checks.count(10**12, "--runs")
    assert info.value.fix == f"Pass --runs {checks.MAX_COUNT} or less."
    assert checks.probability(1.0, "--alpha") == 1.0 and checks.non_negative(0.0, "--cool-limit") == 0.0


def test_threads_beyond_this_machines_cores_are_refused() -> None:
    cores = os.cpu_count() or 1
    assert checks.host_threads(cores) == cores and checks.host_threads(None, optional=True) is None
    with pytest.raises(ConfigError, match=f"{cores} cores"):
        checks.host_threads(cores + 1)


def test_lists_of_names() -> None:
    assert checks.names("fp32, int8", "--precision", known=("fp32", "int8")) == ("fp32", "int8")
    for bad, needle in [("", "names nothing"), (",", "names nothing"), ("fp64", "Unknown --precision fp64")]:
        with pytest.raises(ConfigError, match=needle):
            checks.names(bad, "--precision", known=("fp32", "int8"))
