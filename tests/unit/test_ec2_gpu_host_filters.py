"""The ec2_gpu_host role's filters (roles/ec2_gpu_host/filter_plugins/ec2_gpu_host.py), from plain values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "ec2_gpu_host" / "filter_plugins" / "ec2_gpu_host.py"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


filters = load("ec2_gpu_host_filters", PLUGIN)


def test_a_generated_session_name_counts_as_its_role():
    """botocore names an assumed role's session botocore-session-<epoch>: a new ARN on every login."""
    principal = filters.ec2_gpu_host_caller_principal
    assert principal("arn:aws:sts::123456789012:assumed-role/Dev/botocore-session-1764583200") == (
        "arn:aws:sts::123456789012:assumed-role/Dev/*"
    )
    for kept in (
        "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com",
        "arn:aws:sts::123456789012:assumed-role/Dev/alice",
        "arn:aws:iam::123456789012:user/bob",
    ):
        assert principal(kept) == kept
