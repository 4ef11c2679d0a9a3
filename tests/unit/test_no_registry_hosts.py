"""No package-registry host names in the repository's tracked files.

Registries are described by what they are ("PyPI", "a PyPI mirror", "Debian's mirror"); the host
names a machine uses belong to its own pip and apt configuration. The names checked here are read
at test time: from this machine's pip configuration (``pip config list``, the ``PIP_*``
variables and the pip.conf files) and apt sources, plus the public names of PyPI taken from pip's
own default index. None is written in this file.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP_FILES = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config" / "pip" / "pip.conf",
             Path.home() / ".pip" / "pip.conf"]  # fmt: skip
PIP_VARIABLES = ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"]
APT_SOURCES = Path("/etc/apt")


def host_of(value: str) -> str | None:
    """The host name in a URL (or a bare host[:port] as in trusted-host); None for local ones."""
    value = value.strip().strip("'\"")
    host = urlsplit(value).hostname if "://" in value else urlsplit("//" + value).hostname
    if not host or "." not in host or host.startswith("/"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return None
    return host.lower()


def pip_values() -> list[str]:
    """Every value of this machine's pip configuration (files, environment, pip's own view)."""
    values = [os.environ.get(name, "") for name in PIP_VARIABLES]
    if config := os.environ.get("PIP_CONFIG_FILE"):
        PIP_FILES.append(Path(config))
    for path in PIP_FILES:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue
        values += [value for section in parser.sections() for value in parser[section].values()]
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    values += [line.partition("=")[2] for line in listed.stdout.splitlines()]
    return [word for value in values for word in value.split()]


def apt_values() -> list[str]:
    """The URIs of the apt sources (one-line .list entries and deb822 .sources files)."""
    files = [APT_SOURCES / "sources.list", *sorted((APT_SOURCES / "sources.list.d").glob("*.list")),
             *sorted((APT_SOURCES / "sources.list.d").glob("*.sources"))]  # fmt: skip
    values = []
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith(("deb ", "deb-src ")):
                values += [word for word in line.split()[1:] if "://" in word]
            elif line.lower().startswith("uris:"):
                values += line.split(":", 1)[1].split()
    return values


def pypi_values() -> list[str]:
    """PyPI's own names, as pip knows them (its default index and where it stores files)."""
    from pip._internal.models.index import PyPI, TestPyPI

    return [index.url for index in (PyPI, TestPyPI)] + [index.file_storage_domain for index in (PyPI, TestPyPI)]


def registry_hosts() -> set[str]:
    return {host for value in pip_values() + apt_values() + pypi_values() if (host := host_of(value))}


def pattern(hosts: set[str]) -> re.Pattern:
    """Any of the names, also as part of a longer name (a subdomain) but not of another word."""
    names = "|".join(re.escape(host) for host in sorted(hosts, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9-])(?:{names})(?![a-z0-9-])", re.IGNORECASE)


def offending(paths: list[Path], hosts: set[str]) -> list[str]:
    """'path:line: name' for every occurrence of a registry name in text files."""
    regex = pattern(hosts)
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue  # binary
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            found += [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: {m.group(0)}"
                      for m in regex.finditer(line)]  # fmt: skip
    return found


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def hosts() -> set[str]:
    return registry_hosts()


def test_names_come_from_this_machine_and_pip(hosts):
    from pip._internal.models.index import PyPI

    assert host_of(PyPI.url) in hosts
    assert host_of(PyPI.file_storage_domain) in hosts
    for value in apt_values() + pip_values():
        if host_of(value):
            assert host_of(value) in hosts


def test_scanner_finds_a_name_and_its_subdomains(hosts, tmp_path):
    name = sorted(hosts)[0]
    text = tmp_path / "sample.md"
    text.write_text(f"fine: PyPI, a PyPI mirror, https://mirror.example.com/simple/\nbad: https://{name.upper()}/x\n"
                    f"bad: mirror.{name}\nfine: x{name}y.example\n")  # fmt: skip
    assert offending([text], hosts) == [f"{text}:2: {name.upper()}", f"{text}:3: {name}"]


def test_no_registry_host_names_in_tracked_files(hosts):
    found = offending(tracked_files(), hosts)
    assert not found, (
        "package-registry host names in tracked files (describe the registry instead, e.g. 'PyPI' or "
        "'a PyPI mirror', and leave its address to the machine's pip/apt configuration):\n" + "\n".join(found)
    )
