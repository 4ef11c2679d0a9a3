# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Filters of the ec2_gpu_host role.

ec2_gpu_host_running picks the owner's running instance out of the aws_ec2 inventory, so a
re-run does not describe again what the inventory has just described, and
ec2_gpu_host_security_group_in_place tells from one description whether the security group
already is as the settings want it (then the module that would enforce it is not run). The others hold the
decisions the tasks would otherwise spell as Jinja loops: which launches to try in which order,
which login user an image has, which subnets cannot reach the internet, which same-named
resources exist, which region and owner the aws_ec2 inventory reads, and where the runtime's
data volume lets an instance run.

ec2_gpu_host_resize_target decides whether an existing instance changes type in place;
ec2_gpu_host_status_table shapes the owner's runtimes into the status view; ec2_gpu_host_cost
and ec2_gpu_host_summary say what the instance costs and write the provision stage's summary.

ec2_gpu_host_caller_principal turns the caller's STS ARN into the identity recorded on what
the project creates (tag colab-gpu-runtime:created-by) and compared before anything is changed.

ansible.utils' ipaddr needs the netaddr library, which the controller does not otherwise
need; Python's ipaddress module gives an exact answer with no extra dependency.
"""

from __future__ import annotations

import datetime
import ipaddress
import re

import yaml

# botocore names a session it assumes for a profile's role_arn "botocore-session-<epoch>", so
# the same person has a new ARN on every login; such sessions count as their role.
_GENERATED_SESSION = re.compile(r"^(arn:[^:]+:sts::[0-9]+:assumed-role/[^/]+)/botocore-session-[0-9]+$")


def ec2_gpu_host_caller_principal(arn):
    """The caller's ARN, with a session name that botocore generated replaced by "*".

    "arn:aws:sts::1:assumed-role/Dev/botocore-session-1733050000" -> "arn:aws:sts::1:assumed-role/Dev/*";
    users, SSO sessions (named after the person) and named sessions are kept as they are.
    """
    text = str(arn or "").strip()
    return _GENERATED_SESSION.sub(r"\1/*", text)


def ec2_gpu_host_cidr_info(value):
    """Parse an IPv4 address or CIDR into {valid, network, prefixlen, error}.

    A bare address means that host (/32); host bits are cleared ("203.0.113.7/24" ->
    "203.0.113.0/24") because a security group stores the network anyway.
    """
    text = str(value or "").strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        return {"valid": False, "network": "", "prefixlen": -1, "error": str(exc) or "empty value"}
    if net.version != 4:
        return {"valid": False, "network": str(net), "prefixlen": net.prefixlen, "error": "not an IPv4 network"}
    return {"valid": True, "network": str(net), "prefixlen": net.prefixlen, "error": ""}


# What the short path needs of a running instance, from the aws_ec2 inventory's host variables.
_RUNNING_KEYS = (
    "instance_id", "instance_type", "image_id", "vpc_id", "placement", "public_ip_address",
    "private_ip_address", "tags", "instance_lifecycle", "security_groups", "state",
)


def ec2_gpu_host_running(hosts_vars, region, tags):
    """Running instances among inventory hosts whose EC2 tags include all of `tags`, in `region`.

    Each is returned as the subset of its aws_* host variables the role uses, named like
    ec2_instance_info's keys, plus its inventory name.
    """
    found = []
    for host_vars in hosts_vars:
        have = host_vars.get("aws_tags") or {}
        if not host_vars.get("aws_instance_id") or any(have.get(k) != v for k, v in tags.items()):
            continue
        if (host_vars.get("aws_state") or {}).get("name") != "running":
            continue
        if (host_vars.get("aws_placement") or {}).get("region") != region:
            continue
        instance = {key: host_vars.get("aws_" + key) for key in _RUNNING_KEYS}
        instance["inventory_hostname"] = host_vars.get("inventory_hostname")
        found.append(instance)
    return found


def ec2_gpu_host_security_group_in_place(groups, cidr, rule_desc, tags):
    """The group id if the one described group already is what ec2_security_group would make it, else "".

    `groups` is ec2_security_group_info's list for the group's name and VPC; `cidr` the one
    network SSH is open to ("" for no inbound rule, SSM access); `tags` the tags the module sets
    with purge_tags (tags starting with "aws:" are AWS's own and never purged). Anything else
    (another or a second rule, another rule description, a missing, changed or extra tag) is a
    difference, and the module runs to repair it. The module leaves the description and the
    egress rules of an existing group alone, so they are not compared.
    """
    if len(groups or []) != 1:
        return ""
    group = groups[0]
    wanted = (
        [{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "ip_ranges": [{"cidr_ip": cidr, "description": rule_desc}]}]
        if cidr
        else []
    )
    have = [
        {key: rule.get(key) for key in ("ip_protocol", "from_port", "to_port", "ip_ranges")}
        for rule in group.get("ip_permissions") or []
        if rule.get("ipv6_ranges") in (None, []) and rule.get("prefix_list_ids") in (None, [])
        and rule.get("user_id_group_pairs") in (None, [])
    ]
    if len(have) != len(group.get("ip_permissions") or []) or have != wanted:
        return ""
    own_tags = {k: v for k, v in (group.get("tags") or {}).items() if not str(k).startswith("aws:")}
    if own_tags != {str(k): str(v) for k, v in (tags or {}).items()}:
        return ""
    return group.get("group_id") or ""


def ec2_gpu_host_resource(described, kind, name_key):
    """{kind, name, tags} of one described resource, as tasks/creator.yml checks it."""
    return {"kind": kind, "name": described.get(name_key, ""), "tags": described.get("tags") or {}}


def ec2_gpu_host_launch_candidates(types, subnets, type_info, spot=False, fallback_to_on_demand=True):
    """Launch attempts in preference order: market (spot first when asked), then type, then zone.

    `types` is the ordered list of usable instance types, `subnets` the subnets sorted by zone,
    `type_info` the ec2_gpu_host_instance_type_info answer's instance_types (each with `zones`).
    """
    markets = (["spot"] if spot else []) + (["on-demand"] if not spot or fallback_to_on_demand else [])
    return [
        {"market": market, "type": itype, "subnet_id": subnet["subnet_id"], "zone": subnet["availability_zone"]}
        for market in markets
        for itype in types
        for subnet in subnets
        if subnet["availability_zone"] in ((type_info.get(itype) or {}).get("zones") or [])
    ]


def ec2_gpu_host_login_user(image, rules, explicit=""):
    """The login user: the explicit setting, else the first rule whose pattern matches the image's name or description."""
    if explicit:
        return explicit
    text = "%s %s" % ((image or {}).get("name") or "", (image or {}).get("description") or "")
    for rule in rules or []:
        if re.search(rule["pattern"], text):
            return rule["user"]
    return ""


def ec2_gpu_host_private_subnets(subnets, route_tables):
    """Ids of the subnets whose route table has no default route to an internet gateway.

    A subnet uses its explicitly associated route table, else its VPC's main one. An instance in
    such a subnet gets a public address that nothing can reach, so SSH to it would never answer.
    """
    by_subnet, main = {}, {}
    for table in route_tables or []:
        for assoc in table.get("associations") or []:
            if assoc.get("subnet_id"):
                by_subnet[assoc["subnet_id"]] = table
            if assoc.get("main"):
                main[table.get("vpc_id")] = table

    def reaches_internet(table):
        return any(
            route.get("destination_cidr_block") == "0.0.0.0/0" and str(route.get("gateway_id") or "").startswith("igw-")
            and route.get("state", "active") == "active"
            for route in (table or {}).get("routes") or []
        )

    return [
        subnet["subnet_id"]
        for subnet in subnets or []
        if not reaches_internet(by_subnet.get(subnet["subnet_id"]) or main.get(subnet.get("vpc_id")))
    ]


def ec2_gpu_host_same_named(security_groups, key_pairs, launch_templates):
    """Resources that carry one of the names the role would create, with the setting that names each."""
    found = []
    for kind, items, name_key, setting in (
        ("Security group", security_groups, "group_name", "ec2_gpu_host_security_group_name"),
        ("Key pair", key_pairs, "key_name", "ec2_gpu_host_key_name"),
        ("Launch template", launch_templates, "launch_template_name", "ec2_gpu_host_name"),
    ):
        for item in items or []:
            found.append({"kind": kind, "name": item.get(name_key), "tags": item.get("tags") or {}, "setting": setting})
    return found


def _plain(value):
    """A value written literally in the settings file (not a template, not empty), else ''."""
    text = "" if value is None else str(value)
    return text if text and "{" not in text else ""


def ec2_gpu_host_inventory_scope(settings_text, env, team_text=""):
    """The region and owners inventory/aws_ec2.yml looks for instances with.

    The inventory cannot see extra vars (-e), only the settings file, the team file
    (inventory/team.yml) and the environment: a plain value in the settings file, else AWS_REGION /
    AWS_DEFAULT_REGION / us-east-2 and COLAB_OWNER / USER. `owners` adds, in order, the owner of
    each runtime the team file lists (its own ec2_gpu_host_owner, else its group's, else the
    settings' owner).
    """
    settings = _yaml_mapping(settings_text)
    env = env or {}
    owner = _plain(settings.get("ec2_gpu_host_owner")) or env.get("COLAB_OWNER") or env.get("USER") or ""
    return {
        "region": _plain(settings.get("ec2_gpu_host_region"))
        or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-2",
        "owner": owner,
        "owners": list(dict.fromkeys([owner] + ec2_gpu_host_team_owners(team_text, owner))),
        "region_from": "settings" if _plain(settings.get("ec2_gpu_host_region")) else "environment",
        "owner_from": "settings" if _plain(settings.get("ec2_gpu_host_owner")) else "environment",
    }


def ec2_gpu_host_team_owners(team_text, default_owner):
    """The owner of each runtime in the team file's group colab_runtimes, in the file's order."""
    group = _yaml_mapping(_yaml_mapping(team_text).get("colab_runtimes"))
    group_owner = _plain(_yaml_mapping(group.get("vars")).get("ec2_gpu_host_owner")) or default_owner
    return [_plain(_yaml_mapping(host).get("ec2_gpu_host_owner")) or group_owner
            for host in _yaml_mapping(group.get("hosts")).values()]


def _yaml_mapping(value):
    """A YAML text or an already loaded value as a dict ({} for anything else, invalid YAML included)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = None
    return value if isinstance(value, dict) else {}


def ec2_gpu_host_failure_report(failure, instance):
    """The last words of a run that failed after an instance was launched or started.

    `instance` says what is left: id ('' when the failed host is not one of the project's
    instances), region, type, price (per hour, or None), started (this run launched or started
    it), launched (this run launched it), stop (the stop task's result, or None when it did not
    run), stop_on_failure (the setting) and runtime_arg (what the printed commands add for a named
    runtime, e.g. " -e ec2_gpu_host_runtime_name=big").
    """
    text = " ".join(str(failure or "").split())
    if len(text) > 1500:
        text = text[:1497] + "..."
    if not instance.get("id"):
        return text
    price = "$%.4f/h" % float(instance["price"]) if instance.get("price") is not None else "by the hour (price unknown)"
    what = " ".join(p for p in (instance.get("type"), "in " + instance["region"]) if p)
    head = "%s -- Instance %s (%s, %s while running)" % (text, instance["id"], what, price)
    stop = instance.get("stop")
    runtime = instance.get("runtime_arg") or ""
    stop_command = "`aws ec2 stop-instances --region %s --instance-ids %s`" % (instance["region"], instance["id"])
    if stop is not None and not stop.get("failed"):
        return (
            "%s, which this run %s, has been STOPPED so that it does not bill: while stopped only its disk costs"
            " (gp3, about $0.08 per GB-month). Fix the cause and run `ansible-playbook site.yml%s` again (it starts the"
            " same instance); to delete it: `ansible-playbook playbooks/teardown.yml%s -e ec2_gpu_host_terminate=%s`."
            % (head, "launched" if instance.get("launched") else "started", runtime, runtime, instance["id"])
        )
    if stop is not None:
        why = ": stopping it failed (%s)" % " ".join(str(stop.get("msg") or "").split())[:200]
    elif instance.get("started"):
        why = " (ec2_gpu_host_stop_on_failure is false), possibly without its idle auto-stop"
    else:
        why = " (it was running before this run; its idle auto-stop stops it once idle, if it was installed)"
    return "%s is still RUNNING and billing %s%s. Stop it: %s." % (head, price, why, stop_command)


def ec2_gpu_host_data_volume_plan(volumes, instance, subnets, type_info, usable_types, context):
    """Where the runtime's data volume is and what that allows, before anything is created.

    `volumes` are the ec2_vol_info descriptions of the volumes tagged as this runtime's data
    volume, `instance` the runtime's existing instance (a describe result, or None), `subnets`
    the launch subnets, `type_info` the described instance types ({type: {zones}}), `usable_types` the types a launch may
    try and `context` {region, name}. An EBS volume attaches only to an instance in its own zone:
    a new instance is launched there (the subnets are narrowed to that zone); an existing instance
    in another zone is refused with the fix, never given a second, empty volume.

    Returns {volume (or None), subnets, error ('' when fine)}.
    """
    region, name = context["region"], context["name"]
    volumes = list(volumes or [])
    result = {"volume": volumes[0] if len(volumes) == 1 else None, "subnets": list(subnets or []), "error": ""}
    if len(volumes) > 1:
        ids = ", ".join(v["id"] for v in volumes)
        result["error"] = (
            "Found %d data volumes of runtime %s in %s: %s. Nothing was changed. Fix: keep the one with your data and delete"
            " the others (aws ec2 delete-volume --region %s --volume-id <id>), then run again." % (len(volumes), name, region, ids, region)
        )
        return result
    volume = result["volume"]
    if volume is None:
        return result
    move = (
        "or move the volume there through a snapshot: aws ec2 create-snapshot --region {r} --volume-id {v}, then"
        " aws ec2 create-volume --region {r} --availability-zone {{zone}} --snapshot-id <snapshot id> --volume-type gp3"
        " --encrypted and the tags of the old volume, then aws ec2 delete-volume --region {r} --volume-id {v}"
    ).format(r=region, v=volume["id"])
    attached = [a.get("instance_id") for a in volume.get("attachment_set") or [] if a.get("status") in ("attaching", "attached")]
    instance_id = (instance or {}).get("instance_id")
    others = [i for i in attached if i and i != instance_id]
    if others:
        result["error"] = (
            "Data volume %s of runtime %s is attached to instance %s, which is not the instance of this runtime%s. Nothing was changed."
            " Fix: detach it if that instance no longer needs it (aws ec2 detach-volume --region %s --volume-id %s), then run again."
            % (volume["id"], name, ", ".join(others), " (%s)" % instance_id if instance_id else "", region, volume["id"])
        )
        return result
    zone = volume["zone"]
    if instance:
        instance_zone = instance["placement"]["availability_zone"]
        if instance_zone != zone:
            result["error"] = (
                "Data volume %s of runtime %s is in %s, but instance %s is in %s: an EBS volume attaches only to an"
                " instance in its own zone, and a second, empty volume would hide your data. Nothing was changed."
                " Fix: terminate the instance (its root disk goes, the data volume stays) and run again, which launches"
                " the new instance in %s: ansible-playbook playbooks/teardown.yml -e ec2_gpu_host_terminate=%s &&"
                " ansible-playbook site.yml; %s."
                % (volume["id"], name, zone, instance_id, instance_zone, zone, instance_id, move.format(zone=instance_zone))
            )
        return result
    in_zone = [s for s in result["subnets"] if s.get("availability_zone") == zone]
    if not in_zone:
        result["error"] = (
            "Data volume %s of runtime %s is in %s, but none of the launch subnets is (%s): a new instance there could not"
            " attach it. Nothing was created. Fix: add a subnet in %s to ec2_gpu_host_subnet_ids, %s."
            % (volume["id"], name, zone, ", ".join(sorted({s.get("availability_zone", "?") for s in result["subnets"]})) or "none",
               zone, move.format(zone="<a subnet's zone>"))
        )
        return result
    if not [t for t in usable_types or [] if zone in ((type_info or {}).get(t) or {}).get("zones", [])]:
        result["error"] = (
            "Data volume %s of runtime %s is in %s, where none of %s is offered: a new instance there could not be"
            " launched. Nothing was created. Fix: add an instance type offered in %s to ec2_gpu_host_instance_types, %s."
            % (volume["id"], name, zone, ", ".join(usable_types or []), zone, move.format(zone="<a zone where the type is offered>"))
        )
        return result
    result["subnets"] = in_zone
    return result


def ec2_gpu_host_resize_target(instance, instance_types, requested_tag):
    """The type `instance` should change to in place, or '' when it keeps its type.

    The first of `instance_types` is wanted when it differs both from the instance's type and
    from the first choice recorded on the instance (tag `requested_tag`, written at launch and at
    each resize). A launch that fell back to a later type therefore stays as it is until the
    first choice itself changes. An instance without the tag counts as launched with its type.
    """
    wanted = (list(instance_types or []) or [""])[0]
    current = (instance or {}).get("instance_type") or ""
    recorded = ((instance or {}).get("tags") or {}).get(requested_tag) or current
    return wanted if wanted and wanted not in (current, recorded) else ""



def ec2_gpu_host_market_of(instance, tag_market):
    """'spot' or 'on-demand': how an instance (an ec2_instance_info description) is billed.

    EC2 says spot (instance_lifecycle) for instances launched as spot; the market tag the role
    writes at launch also covers spot instances whose description lacks it.
    """
    instance = instance or {}
    spot = instance.get("instance_lifecycle") == "spot" or (instance.get("tags") or {}).get(tag_market) == "spot"
    return "spot" if spot else "on-demand"


def ec2_gpu_host_types_for_image(instance_types, type_info, image):
    """The instance types, in their order, whose CPU architectures include the image's (x86_64, arm64).

    `type_info` is the ec2_gpu_host_instance_type_info answer's instance_types ({type: {architectures}}).
    """
    arch = (image or {}).get("architecture")
    return [t for t in instance_types or [] if arch in (((type_info or {}).get(t) or {}).get("architectures") or [])]


def ec2_gpu_host_image_root_size(image):
    """The GiB of the image's root volume snapshot (0 when the image does not say), which the launch's root volume must reach."""
    image = image or {}
    root = image.get("root_device_name") or "/dev/sda1"
    for mapping in image.get("block_device_mappings") or []:
        if mapping.get("device_name") == root:
            return int((mapping.get("ebs") or {}).get("volume_size") or 0)
    return 0


def _per_hour(price):
    """A price as the summary writes it: "$0.5260/h", or "price unknown" when there is none."""
    return "$%.4f/h" % float(price) if price is not None and str(price) != "" else "price unknown"


def ec2_gpu_host_cost(instance_type, market, zone, type_info, on_demand, prices_date, region):
    """What the instance costs per hour and where that figure comes from: {per_hour, source}.

    A spot instance is priced from the spot price history of its zone (`type_info`, the
    ec2_gpu_host_instance_type_info answer's instance_types, with spot_prices by zone); an
    on-demand one from the dated table (`on_demand`, type -> $/h of the region). A price that
    is not known is None, with the reason as the source: it is never guessed.
    """
    if market == "spot":
        price = (((type_info or {}).get(instance_type) or {}).get("spot_prices") or {}).get(zone)
        source = "spot price history" if price not in (None, "") else (
            "unknown: no spot price history for %s in %s" % (instance_type, zone))
    else:
        price = (on_demand or {}).get(instance_type)
        source = "on-demand table %s" % prices_date if price not in (None, "") else (
            "unknown: %s in %s is not in the on-demand table of %s" % (instance_type, region, prices_date))
    return {"per_hour": float(price) if price not in (None, "") else None, "source": source}


def ec2_gpu_host_resize_text(resize, old_price, new_price):
    """The summary's words for a type changed in place this run ('' when it was not).

    `resize` is {from, to} (None or {} when the type was kept), the prices are per hour or None.
    """
    if not resize:
        return ""
    return ", resized in place from %s (%s) to %s (%s)" % (
        resize["from"], _per_hour(old_price), resize["to"], _per_hour(new_price))


def ec2_gpu_host_data_volume_text(attached, kept, size_setting, gb_month, region):
    """The summary's words for the runtime's data volume ('' when it has none).

    A data volume costs while it exists, instance or not. `attached` is {id, size, created} of the
    volume this run attached (id '' when none); `kept` the volume found for the runtime
    ({id, size, zone}, or None), named when it is not attached because `size_setting`
    (ec2_gpu_host_data_volume_size) is 0; `gb_month` the gp3 price per GB-month.
    """
    attached = attached or {}
    if attached.get("id"):
        size = int(attached.get("size") or 0)
        return (
            ", data volume %s (%d GiB gp3, encrypted, %s; holds the data directory of the runtime and is kept when"
            " the instance is terminated, about $%.2f/month)"
            % (attached["id"], size, "created" if attached.get("created") else "attached", size * gb_month)
        )
    if kept and int(size_setting or 0) == 0:
        size = int(kept.get("size") or 0)
        return (
            "; data volume %s (%d GiB in %s, about $%.2f/month) is kept from an earlier instance and NOT attached,"
            " because ec2_gpu_host_data_volume_size is 0: set it above 0 to attach it (it keeps its size), or delete"
            " it with aws ec2 delete-volume --region %s --volume-id %s"
            % (kept.get("id", ""), size, kept.get("zone", ""), size * gb_month, region, kept.get("id", ""))
        )
    return ""


def ec2_gpu_host_summary(instance, on_demand, gb_month):
    """The one line the provision stage ends with: what runs where, how it is reached, what it costs.

    `instance` holds the published facts (name, instance_id, instance_type, gpus, market, zone,
    access, ssh_user, public_ip, image_id, image_source, cost_per_hour, cost_source, region), and
    what this run did besides: resize ({from, to}, or None; None in check mode, which changes
    nothing), data_volume ({id, size, created}), data_kept and data_volume_size (see
    ec2_gpu_host_data_volume_text) and attempts (the summaries of the launches that failed).
    `on_demand` is the region's on-demand table (the price of the type resized from).
    """
    i = instance
    resize = i.get("resize") or None
    text = "%s: %s %s (%s) %s in %s, %s as %s@%s, image %s (%s), %s (%s)" % (
        i["name"], i["instance_id"], i["instance_type"], ", ".join(i.get("gpus") or []) or "GPU", i["market"],
        i["zone"], i["access"], i["ssh_user"], i.get("public_ip") or i["instance_id"], i["image_id"],
        i["image_source"], _per_hour(i.get("cost_per_hour")), i["cost_source"],
    )
    text += ec2_gpu_host_resize_text(resize, (on_demand or {}).get((resize or {}).get("from")), i.get("cost_per_hour"))
    text += ec2_gpu_host_data_volume_text(
        i.get("data_volume"), i.get("data_kept"), i.get("data_volume_size"), gb_month, i["region"])
    attempts = list(i.get("attempts") or [])
    return text + (", launch attempts failed: " + "; ".join(attempts) if attempts else "")


def _parse_time(value):
    """An EC2 timestamp (ISO 8601 text or datetime) as epoch seconds, else None."""
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value or "").strip().replace("Z", "+00:00")
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _duration(seconds):
    minutes = int(max(seconds, 0) // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return "%dd%02dh" % (days, hours)
    return "%dh%02dm" % (hours, minutes) if hours else "%dm" % minutes


def _idle_fields(text):
    """(idle, auto-stop) from the idle auto-stop's status file (roles/idle_stop), '' when not known."""
    fields = {}
    for line in str(text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("state", "planned stop"):
            fields[key.strip()] = value.strip()
    state, planned = fields.get("state", ""), fields.get("planned stop", "")
    if not state:
        return "", ""
    if state.startswith("idle for "):
        idle = state[len("idle for "):]
    else:
        idle = state
    found = re.search(r"\(in ([^)]*)\)", planned)
    if found:
        stop = "in " + found.group(1)
    elif planned.startswith("now"):
        stop = "now"
    elif planned.startswith("none"):
        stop = "not while in use"
    else:
        stop = planned
    return idle, stop


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + rows]


def ec2_gpu_host_status_table(instances, type_info, prices, tunnels, idle, now, owner, region, tag_market,
                              tag_runtime="colab-gpu-runtime:runtime"):
    """The owner's runtimes as {"rows": [...], "lines": [...]}: one dict and one table line each.

    `instances` come from ec2_instance_info, `type_info` from ec2_gpu_host_instance_type_info
    (gpus, spot_prices), `prices` is the region's on-demand table (type -> $/h), `tunnels` maps a runtime name to the colab_tunnel
    status (running, healthy, url, url_file), `idle` a name to its idle auto-stop status text
    (absent: not read), `now` is epoch seconds. Several runtimes are listed by name. Data
    volumes are the EBS volumes attached beside the root volume (from the instance description).
    The runtime name is the instance's `tag_runtime` tag ("-" for the owner's unnamed runtime).
    """
    instances = sorted(instances or [], key=lambda i: ((i.get("tags") or {}).get("Name") or "", i.get("instance_id") or ""))
    if not instances:
        text = "No runtimes for %s in %s." % (owner, region)
        return {"rows": [], "lines": [text]}
    rows = []
    for inst in instances:
        tags = inst.get("tags") or {}
        name = tags.get("Name") or inst.get("instance_id")
        itype = inst.get("instance_type") or ""
        state = (inst.get("state") or {}).get("name") or ""
        zone = (inst.get("placement") or {}).get("availability_zone") or ""
        spot = ec2_gpu_host_market_of(inst, tag_market) == "spot"
        info = (type_info or {}).get(itype) or {}
        price = (info.get("spot_prices") or {}).get(zone) if spot else (prices or {}).get(itype)
        running = state == "running"
        started = _parse_time(inst.get("launch_time")) if running else None
        up = (now - started) if started is not None else None
        spent = price * up / 3600.0 if price is not None and up is not None else None
        tunnel = (tunnels or {}).get(name) or {}
        if tunnel.get("healthy"):
            tunnel_text = "up " + (tunnel.get("url") or "")
        elif tunnel.get("running"):
            tunnel_text = "not carrying HTTP"
        else:
            tunnel_text = "down"
        if name in (idle or {}):
            idle_text, stop_text = _idle_fields(idle[name])
            idle_text, stop_text = idle_text or "unknown", stop_text or "unknown"
        else:
            idle_text = stop_text = "-"
        root = inst.get("root_device_name") or ""
        data = [
            "%s (%s)" % (m["ebs"]["volume_id"], m.get("device_name") or "")
            for m in inst.get("block_device_mappings") or []
            if (m.get("ebs") or {}).get("volume_id") and m.get("device_name") != root
        ]
        rows.append({
            "name": name,
            "runtime": tags.get(tag_runtime) or "",
            "instance_id": inst.get("instance_id"),
            "state": state,
            "instance_type": itype,
            "gpu": ", ".join(info.get("gpus") or []) or "-",
            "zone": zone,
            "market": "spot" if spot else "on-demand",
            "uptime": _duration(up) if up is not None else "-",
            "price_per_hour": price,
            "spent_since_start": spent,
            "idle": idle_text,
            "auto_stop": stop_text,
            "tunnel": tunnel_text,
            "url_file": tunnel.get("url_file") or "",
            "data_volumes": data,
        })
    header = ["NAME", "STATE", "TYPE", "GPU", "ZONE", "UP", "$/H", "SPENT", "IDLE", "AUTO-STOP", "TUNNEL", "DATA VOLUME", "RUNTIME"]
    cells = [
        [
            r["name"], r["state"], r["instance_type"] + (" (spot)" if r["market"] == "spot" else ""), r["gpu"], r["zone"],
            r["uptime"], "%.4f" % r["price_per_hour"] if r["price_per_hour"] is not None else "?",
            "$%.2f" % r["spent_since_start"] if r["spent_since_start"] is not None else "-",
            r["idle"], r["auto_stop"], r["tunnel"], ", ".join(r["data_volumes"]) or "-", r["runtime"] or "-",
        ]
        for r in rows
    ]
    running = [r for r in rows if r["state"] == "running"]
    billing = sum(r["price_per_hour"] or 0.0 for r in running)
    lines = ["%d runtime(s) for %s in %s, %d running (%s/h while they run)" % (
        len(rows), owner, region, len(running), "$%.4f" % billing)] + _table(header, cells)
    if any(r["idle"] == "-" for r in running):
        lines.append("Idle time and auto-stop: add -e ec2_gpu_host_status_ssh=true to read them from the running hosts.")
    for r in rows:
        if r["url_file"] and r["tunnel"].startswith("up"):
            lines.append("%s: the URL with its token is in %s" % (r["name"], r["url_file"]))
    return {"rows": rows, "lines": lines}


class FilterModule:
    def filters(self):
        return {
            "ec2_gpu_host_caller_principal": ec2_gpu_host_caller_principal,
            "ec2_gpu_host_cidr_info": ec2_gpu_host_cidr_info,
            "ec2_gpu_host_resource": ec2_gpu_host_resource,
            "ec2_gpu_host_security_group_in_place": ec2_gpu_host_security_group_in_place,
            "ec2_gpu_host_running": ec2_gpu_host_running,
            "ec2_gpu_host_launch_candidates": ec2_gpu_host_launch_candidates,
            "ec2_gpu_host_login_user": ec2_gpu_host_login_user,
            "ec2_gpu_host_private_subnets": ec2_gpu_host_private_subnets,
            "ec2_gpu_host_same_named": ec2_gpu_host_same_named,
            "ec2_gpu_host_inventory_scope": ec2_gpu_host_inventory_scope,
            "ec2_gpu_host_failure_report": ec2_gpu_host_failure_report,
            "ec2_gpu_host_data_volume_plan": ec2_gpu_host_data_volume_plan,
            "ec2_gpu_host_resize_target": ec2_gpu_host_resize_target,
            "ec2_gpu_host_status_table": ec2_gpu_host_status_table,
            "ec2_gpu_host_cost": ec2_gpu_host_cost,
            "ec2_gpu_host_market_of": ec2_gpu_host_market_of,
            "ec2_gpu_host_types_for_image": ec2_gpu_host_types_for_image,
            "ec2_gpu_host_image_root_size": ec2_gpu_host_image_root_size,
            "ec2_gpu_host_summary": ec2_gpu_host_summary,
        }
