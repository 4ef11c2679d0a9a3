"""The ec2_gpu_host role's cost and summary filters: what the instance costs per hour, where that
figure comes from, and the provision stage's summary line (resize, data volume, failed launches)."""

from __future__ import annotations

import pytest

from colab_testkit.substrate import load_role_file

filters = load_role_file("ec2_gpu_host", "filter_plugins/ec2_gpu_host.py", "ec2_gpu_host_filters_cost")

DATE = "2025-06-05"
ON_DEMAND = {"g4dn.xlarge": 0.526, "g5.xlarge": 1.006}
SPOT = {"g4dn.xlarge": {"spot_prices": {"us-east-2a": 0.2345}}, "g5.xlarge": {"spot_prices": {"us-east-2a": "0.3100"}}}


def cost(instance_type="g4dn.xlarge", market="on-demand", zone="us-east-2a", type_info=SPOT):
    return filters.ec2_gpu_host_cost(instance_type, market, zone, type_info, ON_DEMAND, DATE, "us-east-2")


def test_cost_on_demand_from_the_dated_table():
    assert cost() == {"per_hour": 0.526, "source": "on-demand table 2025-06-05"}


def test_cost_on_demand_type_not_in_the_table_is_unknown_never_guessed():
    assert cost("zz.xlarge") == {
        "per_hour": None, "source": "unknown: zz.xlarge in us-east-2 is not in the on-demand table of 2025-06-05",
    }  # fmt: skip


def test_cost_spot_from_the_zone_price_history_text_or_number():
    assert cost(market="spot") == {"per_hour": 0.2345, "source": "spot price history"}
    # The module's answer may carry the price as text.
    assert cost("g5.xlarge", market="spot") == {"per_hour": 0.31, "source": "spot price history"}


@pytest.mark.parametrize("zone,type_info", [("us-east-2c", SPOT), ("us-east-2a", {}), ("us-east-2a", None)])
def test_cost_spot_without_history_is_unknown_even_with_an_on_demand_price(zone, type_info):
    got = cost(market="spot", zone=zone, type_info=type_info)
    assert got == {"per_hour": None, "source": f"unknown: no spot price history for g4dn.xlarge in {zone}"}


def test_resize_text_names_old_and_new_type_and_price():
    resize = {"from": "g4dn.xlarge", "to": "g5.xlarge", "instance_id": "i-1"}
    assert filters.ec2_gpu_host_resize_text(resize, 0.526, 1.006) == (
        ", resized in place from g4dn.xlarge ($0.5260/h) to g5.xlarge ($1.0060/h)"
    )
    assert filters.ec2_gpu_host_resize_text(resize, None, "1.006") == (
        ", resized in place from g4dn.xlarge (price unknown) to g5.xlarge ($1.0060/h)"
    )
    assert filters.ec2_gpu_host_resize_text(resize, 0.526, None).endswith("to g5.xlarge (price unknown)")


@pytest.mark.parametrize("resize", [None, {}])
def test_resize_text_is_empty_when_the_type_was_kept(resize):
    assert filters.ec2_gpu_host_resize_text(resize, 0.526, 1.006) == ""


@pytest.mark.parametrize("created,word", [(True, "created"), (False, "attached")])
def test_data_volume_text_attached(created, word):
    got = filters.ec2_gpu_host_data_volume_text({"id": "vol-1", "size": "20", "created": created}, None, 20, 0.08, "us-east-2")
    assert got == (
        f", data volume vol-1 (20 GiB gp3, encrypted, {word}; holds the data directory of the runtime and is kept when"
        " the instance is terminated, about $1.60/month)"
    )


def test_data_volume_text_kept_but_not_attached_names_the_cost_and_both_fixes():
    kept = {"id": "vol-9", "size": 8, "zone": "us-east-2b"}
    got = filters.ec2_gpu_host_data_volume_text({"id": "", "size": 0, "created": False}, kept, 0, 0.08, "us-east-2")
    assert got == (
        "; data volume vol-9 (8 GiB in us-east-2b, about $0.64/month) is kept from an earlier instance and NOT"
        " attached, because ec2_gpu_host_data_volume_size is 0: set it above 0 to attach it (it keeps its size), or"
        " delete it with aws ec2 delete-volume --region us-east-2 --volume-id vol-9"
    )


@pytest.mark.parametrize(
    "attached,kept,size",
    [({"id": ""}, None, 0), (None, None, 20), ({"id": ""}, {"id": "vol-9", "size": 8, "zone": "z"}, 10)],
    ids=["none", "none-asked", "kept-while-asked"],
)
def test_data_volume_text_empty_without_a_volume_to_name(attached, kept, size):
    assert filters.ec2_gpu_host_data_volume_text(attached, kept, size, 0.08, "us-east-2") == ""


FACTS = {
    "name": "colab-alice", "instance_id": "i-0abc", "instance_type": "g4dn.xlarge", "gpus": ["1x NVIDIA T4 16 GiB"],
    "market": "on-demand", "zone": "us-east-2a", "region": "us-east-2", "access": "ssh", "ssh_user": "ubuntu",
    "public_ip": "203.0.113.5", "image_id": "ami-123", "image_source": "SSM parameter /p", "cost_per_hour": 0.526,
    "cost_source": "on-demand table 2025-06-05", "resize": None, "data_volume": {"id": "", "size": 0, "created": False},
    "data_kept": None, "data_volume_size": 0, "attempts": [],
}  # fmt: skip
HEAD = (
    "colab-alice: i-0abc g4dn.xlarge (1x NVIDIA T4 16 GiB) on-demand in us-east-2a, ssh as ubuntu@203.0.113.5,"
    " image ami-123 (SSM parameter /p), $0.5260/h (on-demand table 2025-06-05)"
)


def summary(**changes):
    return filters.ec2_gpu_host_summary(dict(FACTS, **changes), ON_DEMAND, 0.08)


def test_summary_plain_on_demand():
    assert summary() == HEAD


def test_summary_without_address_gpu_names_or_price():
    got = summary(public_ip="", gpus=[], cost_per_hour=None, cost_source="unknown: why")
    assert got == (
        "colab-alice: i-0abc g4dn.xlarge (GPU) on-demand in us-east-2a, ssh as ubuntu@i-0abc,"
        " image ami-123 (SSM parameter /p), price unknown (unknown: why)"
    )


def test_summary_spot():
    got = summary(market="spot", cost_per_hour=0.2345, cost_source="spot price history")
    assert "g4dn.xlarge (1x NVIDIA T4 16 GiB) spot in us-east-2a" in got
    assert got.endswith("$0.2345/h (spot price history)")


def test_summary_resize_takes_the_old_price_from_the_table():
    got = summary(instance_type="g5.xlarge", cost_per_hour=1.006, resize={"from": "g4dn.xlarge", "to": "g5.xlarge"})
    assert got.endswith("(on-demand table 2025-06-05), resized in place from g4dn.xlarge ($0.5260/h) to g5.xlarge ($1.0060/h)")
    got = summary(resize={"from": "zz.old", "to": "g4dn.xlarge"})
    assert got.endswith(", resized in place from zz.old (price unknown) to g4dn.xlarge ($0.5260/h)")


def test_summary_everything_in_order():
    got = summary(
        resize={"from": "g5.xlarge", "to": "g4dn.xlarge"},
        data_volume={"id": "vol-1", "size": 20, "created": True}, data_volume_size=20,
        attempts=["spot g4dn.xlarge in us-east-2a: InsufficientInstanceCapacity", "on-demand g5.xlarge in us-east-2a: VcpuLimitExceeded"],
    )  # fmt: skip
    assert got == (
        HEAD + ", resized in place from g5.xlarge ($1.0060/h) to g4dn.xlarge ($0.5260/h), data volume vol-1 (20 GiB gp3,"
        " encrypted, created; holds the data directory of the runtime and is kept when the instance is terminated,"
        " about $1.60/month), launch attempts failed: spot g4dn.xlarge in us-east-2a: InsufficientInstanceCapacity;"
        " on-demand g5.xlarge in us-east-2a: VcpuLimitExceeded"
    )


def test_summary_names_a_kept_volume_it_does_not_attach():
    got = summary(data_kept={"id": "vol-9", "size": 8, "zone": "us-east-2b"})
    assert got.startswith(HEAD + "; data volume vol-9 (8 GiB in us-east-2b, about $0.64/month) is kept")
