"""Bench phase `team`: one run of site.yml for a team of 1 and of 3 runtimes, fresh and re-run.

    bench/run.py --only team

Each team size gets its own emulated EC2 API, its own test hosts and a copy of the project whose
inventory/team.yml lists the runtimes (owners bench-t1, bench-t2, and bench-t2's runtime "big"),
so both sizes take the same path: the preflight and provision plays run one fork per runtime, the
configure and connect plays one fork per host. The hosts start from the test image with the
Jupyter runtime already converged (the image the end-to-end tests use): the fresh run is the
provisioning, the rest of the converge, the tunnels and the proofs, not the package downloads
(P1 measures those). The three hosts share this machine's cores, so the fresh ratio is reported
as measured; the no-op re-run's ratio is the one the team run aims at (<= 1.5x).
"""

from __future__ import annotations

import time

import yaml
from colab_testkit.substrate import (
    MotoServer,
    RemoteHost,
    ansible_playbook,
    copy_checkout,
    emulated_aws_env,
    free_port,
    play_recap,
    runtime_image,
    seed_emulated_account,
    write_ec2_overlay,
)

REGION = "us-east-2"
MEMBERS = [("bench-t1", ""), ("bench-t2", ""), ("bench-t2", "big")]
NOOP_TARGET = 1.5


def member_name(owner: str, runtime: str) -> str:
    return f"colab-gpu-runtime-{owner}" + (f"-{runtime}" if runtime else "")


def team_file(members: list[tuple[str, str]]) -> str:
    hosts = {member_name(o, r).removeprefix("colab-gpu-runtime-"): {"ec2_gpu_host_owner": o, **({"ec2_gpu_host_runtime_name": r} if r else {})}
             for o, r in members}  # fmt: skip
    return yaml.safe_dump({"colab_runtimes": {
        "hosts": hosts,
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
    }})  # fmt: skip


def one_size(b, log, image: str, size: int) -> dict:
    members = MEMBERS[:size]
    work = b.work / f"team of {size}"
    moto = MotoServer()
    b.motos.append(moto)
    seed_emulated_account(moto.url, REGION)
    checkout = copy_checkout(work / "checkout")
    (checkout / "inventory" / "team.yml").write_text(team_file(members))
    settings = {"colab_tunnel_state_dir": str(work / "colab"), "colab_runtime_port": free_port(), "idle_stop_enabled": True}
    overlays = []
    for i, (owner, runtime) in enumerate(members):
        host = RemoteHost.start(image=image, key_path=b.key, name=f"colab-bench-team{size}-{i}-{b.run_id}", user="ubuntu")
        b.hosts.append(host)
        name = member_name(owner, runtime)
        overlays += ["-i", str(write_ec2_overlay(work / name, name, host.ssh_port, b.key, members[0][0], REGION, settings))]
    env = {**emulated_aws_env(moto.url, REGION), "COLAB_OWNER": members[0][0]}

    def timed(*args: str) -> dict:
        started = time.monotonic()
        res = ansible_playbook("-i", "inventory/", *overlays, *args, env=env, root=checkout, timeout=2400)
        seconds = time.monotonic() - started
        if res.returncode != 0:
            raise RuntimeError(f"team of {size}: ansible-playbook {' '.join(args)} failed:\n{res.stdout[-7000:]}")
        recap = play_recap(res.stdout)
        return {"seconds": round(seconds, 1), "changed": sum(v["changed"] for v in recap.values()), "hosts": len(recap)}

    try:
        log(f"team: fresh site.yml for {size} runtime(s)")
        fresh = timed("site.yml")
        log(f"team:   {fresh}")
        noop = timed("site.yml")
        log(f"team:   no-op re-run {noop}")
    finally:
        ansible_playbook("-i", "inventory/", *overlays, "playbooks/connect.yml", "-e", "colab_tunnel_state=stopped",
                         env=env, root=checkout, timeout=600)  # fmt: skip
        moto.stop()
    return {"fresh": fresh, "noop": noop}


def team(b, log, loadavg) -> dict:
    image = runtime_image(b.image, b.key, b.work)
    out = {"load_before": loadavg()}
    for size in (1, 3):
        out[str(size)] = one_size(b, log, image, size)
    out["load_after"] = loadavg()
    out["ratio_fresh"] = round(out["3"]["fresh"]["seconds"] / out["1"]["fresh"]["seconds"], 2)
    out["ratio_noop"] = round(out["3"]["noop"]["seconds"] / out["1"]["noop"]["seconds"], 2)
    return out


def lines(p: dict) -> list[str]:
    return [
        "team  one run of site.yml for a team of 1 vs 3 runtimes (hosts start with the runtime converged)",
        f"  {'':22s}{'1 runtime':>14s}{'3 runtimes':>14s}{'ratio':>9s}",
        f"  {'fresh run':22s}{p['1']['fresh']['seconds']:12.1f} s{p['3']['fresh']['seconds']:12.1f} s{p['ratio_fresh']:8.2f}x"
        "   (3 hosts share the cores: reported, not targeted)",
        f"  {'no-op re-run':22s}{p['1']['noop']['seconds']:12.1f} s{p['3']['noop']['seconds']:12.1f} s{p['ratio_noop']:8.2f}x"
        f"   (target <= {NOOP_TARGET}x; changed: {p['1']['noop']['changed']} / {p['3']['noop']['changed']})",
        f"  load average before / after: {p['load_before']} / {p['load_after']}",
    ]
