"""The house rules: the layers import-linter checks, no import cycle anywhere, and packages that import alone."""

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mobilelwt", "targets", "device_bench")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), every import counted: function-local and
    TYPE_CHECKING ones too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert _cycles(graph) == []


def test_the_import_contracts_hold() -> None:
    run = subprocess.run(["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "0 broken" in run.stdout


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y", "a.z"]]


ALONE = [
    "mobilelwt.modules",
    "mobilelwt.teachers",
    "mobilelwt.data",
    "mobilelwt.planners",
    "mobilelwt.plan",
    "mobilelwt.builddir",
    "mobilelwt.loading",
    "mobilelwt.compress",
    "mobilelwt.frontier",
    "targets.executorch",
    "device_bench.bench",
]


def test_each_package_imports_alone_in_a_fresh_interpreter() -> None:
    # every import order is valid when there is no cycle; this checks the packages' own __init__ files too
    runs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            for m in ALONE}  # fmt: skip
    failed = {m: run.communicate()[1][-1000:] for m, run in runs.items() if run.wait() != 0}
    assert failed == {}


def test_the_device_runner_and_the_cli_start_without_torch() -> None:
    code = ("import sys, device_bench.runner, device_bench.timing, device_bench.parsers, mobilelwt.app.cli; "
            "print('torch' in sys.modules)")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]
