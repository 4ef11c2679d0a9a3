# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Digest of what a converge would apply: the roles' files and the settings given.

Runs on the controller, in-process (milliseconds): every file of each named role (sorted by
path; compiled Python caches left out) and the JSON of the settings, hashed together with the
ansible-core version, since a module's behaviour is part of what gets applied.

Of the settings given, only the variables the roles declare (their meta/argument_specs.yml, the
one description of a role's variables) count: a fact a role publishes under its prefix (say
nvidia_gpu_summary, left by an earlier play) is an output, and hashing it would make an
unchanged host look changed.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: converge_state_digest
short_description: SHA-256 over roles' files and a set of settings
description:
  - Returns one SHA-256 hex digest over every file of the named roles, the given settings
    (as canonical JSON) and the ansible-core version.
options:
  _terms:
    description: Role names, looked up in the directory holding this role and in the configured roles path.
    required: true
  settings:
    description:
      - Settings that shape the converge, by variable name (values JSON-serialisable).
      - Only the names some role of O(_terms) declares in its C(meta/argument_specs.yml) are hashed.
    type: dict
    default: {}
"""

RETURN = r"""
_raw:
  description: One hex digest.
  type: list
  elements: str
"""

import hashlib
import json
import os

import yaml

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.release import __version__ as ansible_version
from ansible.plugins.lookup import LookupBase

SKIPPED_DIRS = {"__pycache__", ".pytest_cache"}


def role_dir(name, search):
    for base in search:
        candidate = os.path.join(base, name)
        if os.path.isdir(os.path.join(candidate, "tasks")):
            return candidate
    raise AnsibleError("converge_state_digest: role %r not found in %s" % (name, ", ".join(search)))


def tree_digest(root):
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(directory, name)
            digest.update(to_bytes(os.path.relpath(path, root)) + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def declared_variables(root):
    """Every option of every entry point in the role's meta/argument_specs.yml."""
    path = os.path.join(root, "meta", "argument_specs.yml")
    if not os.path.isfile(path):
        return set()
    with open(path, "rb") as handle:
        specs = (yaml.safe_load(handle) or {}).get("argument_specs") or {}
    return {name for entry in specs.values() for name in (entry or {}).get("options") or {}}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        search = [os.path.dirname(here)] + [os.path.expanduser(p) for p in C.DEFAULT_ROLES_PATH]
        dirs = {name: role_dir(name, search) for name in terms}
        roles = {name: tree_digest(path) for name, path in dirs.items()}
        declared = set().union(*(declared_variables(path) for path in dirs.values()))
        given = self.get_option("settings") or {}
        try:
            settings = json.dumps({k: v for k, v in given.items() if k in declared}, sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise AnsibleError("converge_state_digest: settings are not serialisable: %s" % exc)
        payload = json.dumps({"ansible": ansible_version, "roles": roles, "settings": settings}, sort_keys=True)
        return [hashlib.sha256(to_bytes(payload)).hexdigest()]
