"""A build's choice among the frontier's points by their exported files (device_bench/frontier.py)."""

from device_bench.frontier import choose_by_files


def _frontier(**overrides):
    def point(target, drop, trained="fine-tuned"):
        return {"target": target, "speedup": target, "speedup_ci95": [target * 0.95, target * 1.05], "drop": drop,
                "trained": trained, "dir": f"frontier/x{target:g}", "compress_key": f"k{target:g}"}  # fmt: skip

    record = {"chosen": 7.97, "max_drop": 1.0, "floor": None, "latency": {"precision": "fp32"},
              "points": [point(3.38, 0.0, "layer-wise only"), point(5.06, -0.6), point(7.97, -0.56),
                         point(7.59, 3.46)]}  # fmt: skip
    record.update(overrides)
    return record


def _file(speedup, ci=None):
    return {"status": "ok", "speedup": speedup, "speedup_ci95": ci or [speedup * 0.96, speedup * 1.04]}


def _bench(fp32, int8=None):
    """fp32 (and int8) speedups by target, as frontier-bench.json records them."""
    return {"points": [{"target": t, "compress_key": f"k{t:g}", "fp32": _file(s),
                        "int8": _file((int8 or {}).get(t, 2 * s))} for t, s in fp32.items()]}  # fmt: skip


def test_the_fastest_file_within_the_budget_is_chosen_over_the_planners_pick() -> None:
    # measured on CIFAR-10 (AlexNet 64², --max-drop 1): the 5.06x point's file ran 9.05x, the planner's pick 8.49x,
    # and a point that lost 3.46 points ran 19.38x
    choice = choose_by_files(_frontier(), _bench({5.06: 9.05, 7.97: 8.49, 7.59: 19.38}))
    assert choice["chosen"] == 5.06 and choice["planner_chose"] == 7.97 and choice["files"] is True
    assert choice["reason"] == (
        "its file ran fastest; the planner's timing ranked the 7.97× point first, whose file ran 8.49×"
    )
    assert choice["speeds"]["7.59"][0] == 19.38  # every timed point's speed, for the sentence


def test_the_planners_pick_stands_when_its_file_is_fastest_or_no_file_was_timed() -> None:
    kept = choose_by_files(_frontier(), _bench({5.06: 8.0, 7.97: 8.49}))
    assert kept["chosen"] == 7.97 and kept["reason"] == "its file ran fastest too"
    skipped = choose_by_files(_frontier(), {"points": [], "skipped": "coreml does not run on this host"})
    assert skipped["chosen"] == 7.97 and skipped["reason"].startswith("files not timed (coreml does not run")
    failed = {"points": [{"target": 7.97, "fp32": {"status": "failed", "reason": "export failed"}}]}
    assert choose_by_files(_frontier(), failed)["reason"] == "no file within the budget was timed: the planner's choice"


def test_a_file_below_the_floor_is_not_chosen_and_an_int8_search_is_decided_by_int8_files() -> None:
    floor = _frontier(floor=8.5)
    choice = choose_by_files(floor, _bench({5.06: 8.0, 7.97: 9.0}))
    assert choice["chosen"] == 7.97  # 5.06's file, 8.0x (7.68-8.32), does not reach 8.5x
    none = choose_by_files(floor, _bench({5.06: 8.0, 7.97: 7.0}))
    assert none["chosen"] == 7.97 and none["reason"] == "no file within the budget reached 8.5×: the planner's choice"
    int8 = _frontier(latency={"precision": "int8"})
    choice = choose_by_files(int8, _bench({5.06: 9.0, 7.97: 8.0}, int8={5.06: 12.0, 7.97: 17.8}))
    assert choice["chosen"] == 7.97 and choice["speeds"]["7.97"][0] == 17.8
