import itertools
import random

import pytest

from mobilelwt.planners.allocate import Option, allocate, total_ms


def _random_table(seed: int, layers: int = 4, options: int = 4) -> dict[str, list[Option]]:
    rng = random.Random(seed)
    table = {}
    for index in range(layers):
        teacher = rng.uniform(1, 10)
        opts = [Option(0.0, teacher, None)]
        for k in range(options):
            ms = teacher * rng.uniform(0.05, 0.9)
            opts.append(Option(rng.uniform(0, 1) / (ms + 0.1), ms, (index, k)))
        table[f"layer{index}"] = opts
    return table


def _brute_force(table: dict[str, list[Option]], budget: float) -> float:
    best = float("inf")
    for combo in itertools.product(*table.values()):
        if sum(o.ms for o in combo) <= budget:
            best = min(best, sum(o.cost for o in combo))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_allocation_meets_the_predicted_budget_never_exceeds_it_and_is_near_optimal(seed) -> None:
    table = _random_table(seed)
    teacher_ms = sum(opts[0].ms for opts in table.values())
    for share in (0.2, 0.35, 0.6):
        budget = teacher_ms * share
        chosen = allocate(table, budget)
        optimum = _brute_force(table, budget)
        if optimum == float("inf"):
            assert chosen is None
            continue
        assert chosen is not None and set(chosen) == set(table)
        assert total_ms(chosen) <= budget  # never over: every time is rounded up to the grid
        # exact on the grid; the grid's rounding can only cost a sliver of the optimum
        assert sum(o.cost for o in chosen.values()) <= optimum + 0.05 * max(optimum, 1e-9) + 1e-9


def test_a_budget_below_the_fastest_choice_is_infeasible_and_a_generous_one_keeps_the_teacher() -> None:
    table = {"a": [Option(0.0, 4.0), Option(0.3, 1.0, "a1")], "b": [Option(0.0, 6.0), Option(0.1, 2.0, "b1")]}
    assert allocate(table, 2.9) is None
    assert allocate(table, 0.0) is None
    assert {n: o.choice for n, o in allocate(table, 10.0).items()} == {"a": None, "b": None}
    assert {n: o.choice for n, o in allocate(table, 6.1).items()} == {"a": None, "b": "b1"}  # cheapest cut
    assert {n: o.choice for n, o in allocate(table, 3.1).items()} == {"a": "a1", "b": "b1"}
