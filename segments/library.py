"""Load named segments from YAML files: the shipped library plus the user's own directories.

A file holds ``segments: {NAME: {description: ..., rule: {...}}}``. Files are read in order:
``segments/library/*.yaml`` shipped with touchflow, then each entry of ``TOUCHFLOW_SEGMENTS_PATH``
(directories or files, separated by ``:``); a later definition of a name replaces an earlier one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from segments.rules import Rule, SegmentError, parse_rule

SHIPPED = Path(__file__).with_name("library")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


@dataclass
class Segment:
    """A named, checked segment and where it was defined."""

    name: str
    rule: Rule
    description: str = ""
    source: str = ""


def _files(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted([*entry.glob("*.yaml"), *entry.glob("*.yml")])
    if entry.is_file():
        return [entry]
    raise SegmentError(f"{entry}: no such segment file or directory (check TOUCHFLOW_SEGMENTS_PATH)")


def load_file(path: Path) -> dict[str, Segment]:
    """Read and check one segment file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SegmentError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"segments"} or not isinstance(data["segments"], dict):
        raise SegmentError(f"{path}: a segment file is a mapping with one key, segments: {{NAME: {{rule: ...}}}}")
    result: dict[str, Segment] = {}
    for name, body in data["segments"].items():
        where = f"{path}: segment {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise SegmentError(f"{where}: names are lower-case letters, digits, _ and -")
        if not isinstance(body, dict) or "rule" not in body:
            raise SegmentError(f"{where}: needs a rule (and may have a description)")
        unknown = set(body) - {"rule", "description"}
        if unknown:
            raise SegmentError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; keys: rule, description")
        result[name] = Segment(name, parse_rule(body["rule"], f"{where} rule"), str(body.get("description", "")),
                               str(path))
    return result


def search_path() -> list[Path]:
    """The shipped library, then the project's ``segments/``, then the ``segments_path`` setting's entries."""
    from touchflow.settings import get_settings, project_dir

    project = project_dir()
    own = [project / "segments"] if project is not None and (project / "segments").is_dir() else []
    extra = get_settings().segments_path
    return [SHIPPED, *own, *(Path(p) for p in extra.split(os.pathsep) if p.strip())]


def load_library(paths: list[Path] | None = None) -> dict[str, Segment]:
    """Load every segment on the search path, checking that referenced segments exist and do not loop."""
    library: dict[str, Segment] = {}
    for entry in paths if paths is not None else search_path():
        for path in _files(entry):
            library.update(load_file(path))
    for segment in library.values():
        check_references(segment.rule, library, [segment.name])
    return library


def check_references(rule: Rule, library: dict[str, Segment], stack: list[str]) -> None:
    """Raise SegmentError for a reference to an unknown segment or a cycle of references."""
    if rule.kind == "segment":
        name = rule.params["name"]
        if name not in library:
            raise SegmentError(f"{rule.where}: unknown segment {name!r}; known: {', '.join(sorted(library))}")
        if name in stack:
            raise SegmentError(f"{rule.where}: segments refer to each other in a loop: {' → '.join(stack + [name])}")
        check_references(library[name].rule, library, stack + [name])
    for child in rule.children:
        check_references(child, library, stack)
