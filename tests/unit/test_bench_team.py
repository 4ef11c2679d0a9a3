"""bench/team.py's team files (the same path for 1 and 3 runtimes) and its table."""

from __future__ import annotations

import runpy

import yaml

from colab_testkit.substrate import ROOT, load_role_file

TEAM = runpy.run_path(str(ROOT / "bench/team.py"))


def test_team_file_lists_each_runtime_with_its_owner_and_name():
    data = yaml.safe_load(TEAM["team_file"](TEAM["MEMBERS"]))["colab_runtimes"]
    assert data["hosts"] == {
        "bench-t1": {"ec2_gpu_host_owner": "bench-t1"},
        "bench-t2": {"ec2_gpu_host_owner": "bench-t2"},
        "bench-t2-big": {"ec2_gpu_host_owner": "bench-t2", "ec2_gpu_host_runtime_name": "big"},
    }
    assert data["vars"]["ansible_connection"] == "local"
    # The inventory looks for both owners (the preflight's own reading of the team file).
    filters = load_role_file("ec2_gpu_host", "filter_plugins/ec2_gpu_host.py").FilterModule().filters()
    scope = filters["ec2_gpu_host_inventory_scope"]("", {"COLAB_OWNER": "bench-t1"}, TEAM["team_file"](TEAM["MEMBERS"]))
    assert scope["owners"] == ["bench-t1", "bench-t2"]


def test_instance_names_follow_the_roles_naming():
    assert [TEAM["member_name"](o, r) for o, r in TEAM["MEMBERS"]] == [
        "colab-gpu-runtime-bench-t1", "colab-gpu-runtime-bench-t2", "colab-gpu-runtime-bench-t2-big"]  # fmt: skip


def test_table_puts_sizes_and_ratios_side_by_side():
    run = {"1": {"fresh": {"seconds": 100.0, "changed": 30}, "noop": {"seconds": 20.0, "changed": 0}},
           "3": {"fresh": {"seconds": 250.0, "changed": 90}, "noop": {"seconds": 26.0, "changed": 0}},
           "ratio_fresh": 2.5, "ratio_noop": 1.3, "load_before": [1.0], "load_after": [2.0]}  # fmt: skip
    text = "\n".join(TEAM["lines"](run))
    assert "fresh run" in text and "100.0 s" in text and "250.0 s" in text and "2.50x" in text
    assert "no-op re-run" in text and "1.30x" in text and "target <= 1.5x" in text and "changed: 0 / 0" in text


def test_noop_figure_is_the_median_sample_and_keeps_every_sample():
    samples = [{"seconds": s, "changed": c, "hosts": 6} for s, c in ((31.0, 0), (27.5, 0), (29.0, 1), (40.2, 0), (28.1, 0))]
    noop = TEAM["median_run"](samples)
    assert noop["seconds"] == 29.0 and noop["samples"] == [31.0, 27.5, 29.0, 40.2, 28.1]
    assert noop["changed_max"] == 1, "a re-run that changed something is not hidden by the median"
    run = {"1": {"fresh": {"seconds": 90.0, "changed": 13}, "noop": TEAM["median_run"](samples[:3])},
           "3": {"fresh": {"seconds": 150.0, "changed": 38}, "noop": noop},
           "ratio_fresh": 1.67, "ratio_noop": 0.98, "load_before": [1.0], "load_after": [2.0]}  # fmt: skip
    text = "\n".join(TEAM["lines"](run))
    assert "no-op re-run, median" in text and "changed: 1 / 1" in text
    assert "3 runtime(s), each re-run: 31.0 27.5 29.0 40.2 28.1 s" in text
    assert "1 runtime(s), each re-run: 31.0 27.5 29.0 s" in text
