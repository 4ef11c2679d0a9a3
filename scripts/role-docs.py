#!/usr/bin/env python3
"""Render each role README's variable section from the role's meta/argument_specs.yml.

meta/argument_specs.yml is the one description of a role's variables (site.yml validates the
settings against it); the README shows the same as a table between the markers

    <!-- BEGIN argument_specs -->
    <!-- END argument_specs -->

so that it cannot drift. A README without the markers gets a "## Variables" section at its end.

    scripts/role-docs.py           rewrite the sections that changed (make docs)
    scripts/role-docs.py --check   exit 1 and name each README that is not current
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- BEGIN argument_specs -->"
END = "<!-- END argument_specs -->"
SECTION = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
# Ansible's documentation markup (C(...), O(...), L(text,url), ...), as ansible-doc knows it.
MARKUP = re.compile(r"\b(RV|[CIBUMOVEPL])\(")
CODE_MARKUP = {"C", "O", "V", "RV", "M", "E", "P"}


class SpecError(Exception):
    """A spec the README cannot be rendered from; the message names the file and the option."""


def _closing_paren(text: str, start: int) -> int:
    """Index of the parenthesis closing the one opened just before `start` (nested pairs allowed)."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def code(text: str) -> str:
    """A Markdown code span that survives a table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """Text for a table cell: no cell breaks, no HTML tags made out of placeholders like <role>."""
    return re.sub(r"<(?=[A-Za-z/!])", "&lt;", text.replace("|", "\\|"))


def markdown(text: str) -> str:
    """Ansible markup to Markdown: C(x) and O(x) become code, I(x) emphasis, B(x) bold, L(t,u) links."""
    text = " ".join(str(text).split())
    out, position = [], 0
    for match in MARKUP.finditer(text):
        if match.start() < position:
            continue
        end = _closing_paren(text, match.end())
        if end < 0:
            continue
        out.append(plain(text[position : match.start()]))
        kind, inner = match.group(1), text[match.end() : end]
        if kind in CODE_MARKUP:
            out.append(code(inner))
        elif kind == "I":
            out.append(f"*{plain(inner)}*")
        elif kind == "B":
            out.append(f"**{plain(inner)}**")
        elif kind == "U":
            out.append(f"<{inner}>")
        elif kind == "L":
            label, _, url = inner.rpartition(",")
            out.append(f"[{plain(label.strip())}]({url.strip()})")
        position = end + 1
    out.append(plain(text[position:]))
    return "".join(out)


def description(spec: dict) -> str:
    value = spec.get("description")
    items = value if isinstance(value, list) else [value]
    return " ".join(markdown(item) for item in items if item)


def default_cell(spec: dict) -> str:
    if spec.get("required"):
        return "required"
    if "default" not in spec or spec["default"] is None:
        return code("null")
    value = spec["default"]
    if isinstance(value, bool):
        return code("true" if value else "false")
    if isinstance(value, str):
        # Quoted where YAML would read the bare text as something else ("580", "", "yes").
        return code(json.dumps(value) if _reads_as_other_than_text(value) else value)
    if isinstance(value, (list, dict)):
        return code(yaml.safe_dump(value, default_flow_style=True, width=10_000).strip())
    return code(str(value))


def _reads_as_other_than_text(value: str) -> bool:
    if not value or value != value.strip():
        return True
    try:
        return not isinstance(yaml.safe_load(value), str)
    except yaml.YAMLError:
        return False  # e.g. a Jinja expression: shown as written


def type_cell(spec: dict) -> str:
    kind = spec.get("type", "str")
    if kind == "list" and spec.get("elements"):
        kind = f"list of {spec['elements']}"
    if spec.get("choices"):
        kind += " (" + ", ".join(code(str(choice)) for choice in spec["choices"]) + ")"
    if spec.get("no_log"):
        kind += ", secret"
    return kind


def table(options: dict, where: str) -> list[str]:
    lines = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, spec in options.items():
        if not isinstance(spec, dict) or not spec.get("description"):
            raise SpecError(f"{where}: option {name} has no description")
        lines.append(f"| {code(name)} | {type_cell(spec)} | {default_cell(spec)} | {description(spec)} |")
    return lines


def entry_point_groups(specs: dict) -> list[tuple[list[str], dict, dict]]:
    """Entry points that take the same options (e.g. a shared YAML anchor) are shown once."""
    groups: list[tuple[list[str], dict, dict]] = []
    for name, entry in specs.items():
        options = (entry or {}).get("options") or {}
        for names, group_options, _ in groups:
            if group_options == options:
                names.append(name)
                break
        else:
            groups.append(([name], options, entry or {}))
    return groups


def render(spec_file: Path) -> str:
    """The generated section (markers included) for one role."""
    where = str(spec_file)
    try:
        specs = (yaml.safe_load(spec_file.read_text()) or {})["argument_specs"]
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise SpecError(f"{where}: not an argument_specs file ({err})") from err
    lines = [
        BEGIN,
        "<!-- Generated from meta/argument_specs.yml by scripts/role-docs.py (make docs): edit the spec, not this table. -->",
        "",
    ]
    groups = entry_point_groups(specs)
    for names, options, entry in groups:
        entry_points = " and ".join(code(n) for n in names)
        if len(groups) > 1:
            lines += [f"### Entry point{'s' if len(names) > 1 else ''} {entry_points}", ""]
            if entry.get("short_description"):
                lines += [markdown(entry["short_description"]).rstrip(".") + ".", ""]
        elif len(names) > 1:
            lines += [f"Entry points {entry_points} take the same variables.", ""]
        lines += table(options, f"{where} ({', '.join(names)})") if options else ["No variables."]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def updated_readme(readme: Path, section: str) -> str:
    text = readme.read_text() if readme.exists() else f"# {readme.parent.name}\n"
    if SECTION.search(text):
        return SECTION.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n## Variables\n\n" + section + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a README is not current")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="project directory")
    args = parser.parse_args(argv)

    spec_files = sorted(args.root.glob("roles/*/meta/argument_specs.yml"))
    if not spec_files:
        print(f"no roles/*/meta/argument_specs.yml under {args.root}", file=sys.stderr)
        return 2
    stale = []
    for spec_file in spec_files:
        readme = spec_file.parent.parent / "README.md"
        try:
            wanted = updated_readme(readme, render(spec_file))
        except SpecError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if readme.exists() and readme.read_text() == wanted:
            continue
        stale.append(readme.relative_to(args.root))
        if not args.check:
            readme.write_text(wanted)
            print(f"updated {readme.relative_to(args.root)}")
    if args.check and stale:
        print(
            "Role READMEs not generated from meta/argument_specs.yml: "
            + ", ".join(map(str, stale))
            + ". Run `make docs` and commit the result.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
