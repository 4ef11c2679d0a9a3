# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Action colab_tunnel_prove: execute a cell through the tunnel in each Colab flow.

Runs the role's Colab-protocol client (module_utils/colab_client.py) in-process on the controller: no
module payload to build, no interpreter to start, and the token stays in memory (it is never on
a command line or in an environment that verbose output would print). Options and return
values are documented in library/colab_tunnel_prove.py.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.parse

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import module_utils_loader

_CLIENT_MODULE = "colab_tunnel_colab_client"
ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    token=dict(type="str", required=True, no_log=True),
    flows=dict(type="list", elements="str", required=True),
    code=dict(type="str", default="print(6*7)"),
    expect=dict(type="str"),
    origin=dict(type="str", default="https://colab.research.google.com"),
    gpu=dict(type="bool", default=False),
    pip_package=dict(type="str", default=""),
    gpu_required=dict(type="bool", default=False),
    root_gpus=dict(type="int"),
    service=dict(type="str", default="colab-runtime"),
    gpu_timeout=dict(type="int", default=300),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def _client(self):
        """The role's client module (loaded once per worker; dataclasses need it in sys.modules).

        Ansible adds a role's module_utils folder to its module_utils loader, but an action plugin
        outside a collection cannot import from it by name (ansible.module_utils.* is only built
        for modules): ask that loader where the file is, then load it from there.
        """
        if _CLIENT_MODULE not in sys.modules:
            path = module_utils_loader.find_plugin("colab_client")
            if path is None:
                raise AnsibleActionFail("colab_client.py is missing from the colab_tunnel role's module_utils folder")
            spec = importlib.util.spec_from_file_location(_CLIENT_MODULE, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[_CLIENT_MODULE] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[_CLIENT_MODULE]
                raise
        return sys.modules[_CLIENT_MODULE]

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, p = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        client = self._client()
        unknown = sorted(set(p["flows"]) - set(client.FLOWS))
        if unknown or not p["flows"]:
            raise AnsibleActionFail(f"flows {p['flows']} must name one or more of {', '.join(client.FLOWS)}")
        url = f"{p['url'].rstrip('/')}/?{urllib.parse.urlencode({'token': p['token']})}"
        followup = client.gpu_proof_code(p["pip_package"]) if p["gpu"] else None
        checks, followed = client.prove_flows(
            url, tuple(p["flows"]), p["code"], p["expect"], p["origin"], followup, p["gpu_timeout"]
        )  # fmt: skip
        lines = [line for _, line in checks]
        result.update(
            changed=False,
            ok_flows=[flow for flow, (ok, _) in zip(p["flows"], checks) if ok],
            stdout="\n".join(lines),
            stdout_lines=lines,
        )
        if not all(ok for ok, _ in checks):
            result.update(failed=True, msg="; ".join(lines))
        elif followed is not None:
            try:
                proof = client.parse_gpu_proof(followed)
            except ValueError as err:
                proof = {"gpus": [], "reason": f"the proof cell failed: {err}", "pip": ""}
            result.update(
                gpu=proof,
                gpu_summary=client.gpu_summary(proof),
                pip=proof.get("pip") or ("not checked" if not p["pip_package"] else "the proof cell did not get to pip"),
                gpu_failure=client.gpu_verdict(proof, p["root_gpus"], p["gpu_required"], p["service"]),
            )
        return result
