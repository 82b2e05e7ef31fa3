"""Reading YAML files a user wrote (job configs, pipelines) with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vision3d.errors import UserError

__all__ = ["parse_yaml_mapping", "read_yaml_mapping"]


def read_yaml_mapping(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """Parse a UTF-8 YAML file whose top level is a mapping (an empty file reads as ``{}``).

    Args:
        path: the file.
        what: what it is, for messages (e.g. "config file", "pipeline file").

    Raises:
        UserError: missing path, a directory, unreadable or non-UTF-8 bytes, a YAML syntax error
            (with its line), or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a {what}; pass the YAML file itself")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror or e}); check its permissions") from None
    return parse_yaml_mapping(data, str(path), what)


def parse_yaml_mapping(data: bytes, where: str, what: str = "config file") -> dict[str, Any]:
    """Parse UTF-8 YAML bytes whose top level is a mapping (empty reads as ``{}``).

    Args:
        data: the file's bytes.
        where: names the source in messages (a path).
        what: what it is, for messages.

    Raises:
        UserError: non-UTF-8 bytes, a YAML syntax error (with its line), or a top level that is not a mapping.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte {e.start}); save the {what} as UTF-8") from None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise UserError(f"{where}:{line} is not valid YAML ({problem}); fix the syntax") from None
    if parsed is None:
        parsed = {}
    if not isinstance(parsed, dict):
        raise UserError(f"{where}: expected a mapping of keys at the top level, got {type(parsed).__name__}")
    return parsed
