"""The arithmetic of bench/bench_floor_rounds.py on hand-made rounds (medians,
bests, the engine at % of the floor, two threads against one) and its refusal
of a missing floor script.  No measuring."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_floor_rounds as bfr  # noqa: E402


def test_rounds_are_summarised_by_medians_bests_and_ratios():
    # (engine s, floor s) per round; the middle round is the machine's bad moment
    rounds = [{("higgs", 1): (1.0, 0.8), ("higgs", 2): (0.6, 0.4)},
              {("higgs", 1): (2.0, 1.6), ("higgs", 2): (1.5, 0.9)},
              {("higgs", 1): (1.2, 0.7), ("higgs", 2): (0.5, 0.5)}]
    s = bfr.summarise(rounds)
    one, two = s[("higgs", 1)], s[("higgs", 2)]
    assert one["engine_s"] == [1.0, 2.0, 1.2] and one["floor_s"] == [0.8, 1.6, 0.7]
    assert one["engine_median_s"] == 1.2 and one["engine_best_s"] == 1.0
    assert one["floor_median_s"] == 0.8 and one["floor_best_s"] == 0.7
    assert one["pct_of_floor_medians"] == pytest.approx(0.8 / 1.2)
    assert one["pct_of_floor_bests"] == pytest.approx(0.7 / 1.0)
    assert one["pct_of_floor_rounds"] == pytest.approx([0.8, 0.8, 0.7 / 1.2])
    assert "speedup_vs_1_thread_medians" not in one
    assert two["speedup_vs_1_thread_medians"] == pytest.approx(1.2 / 0.6)
    assert two["floor_speedup_vs_1_thread_medians"] == pytest.approx(0.8 / 0.5)


def test_a_missing_floor_script_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no kernel floor script"):
        bfr.main(["--roofline", str(tmp_path / "nowhere.sh"), "--rounds", "1"])
    with pytest.raises(SystemExit, match="at least 1"):
        bfr.main(["--roofline", __file__, "--rounds", "0"])


def test_a_failing_floor_script_is_named_with_its_last_lines(tmp_path):
    script = tmp_path / "roofline.sh"
    script.write_text("echo 'cc: no AVX-512 here' >&2\nexit 3\n")
    with pytest.raises(SystemExit, match=r"(?s)roofline.sh failed in round 1 \(exit 3\).*"
                                         r"no AVX-512 here"):
        bfr.main(["--roofline", str(script), "--rounds", "2"])
