"""Files people write (incident reports, trust roots, party files), read strictly.

A key this program does not know, or a key given twice, is refused with the file and the
key named, never dropped: a misspelt `authority_treshold: 2` must not quietly become the
default threshold of 1. Every error is one line.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


class UserFileError(ValueError):
    """A file a person wrote cannot be used as it is; the message names file and place."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping key given twice (YAML keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges; explicit keys may override merged ones
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # an unhashable key: the constructor says so below
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"key {key!r} is given twice")
        doc[key] = value
    return doc


def load(path: Path) -> Any:
    """A .json file as JSON, anything else as YAML; duplicate keys refused. A file that is
    missing or cannot be opened raises its OSError (FileNotFoundError, ...): the command
    says `FILE: No such file or directory`, as for any file it is given (exit 2)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserFileError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=_no_duplicates)
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserFileError(f"{where}: {e.problem or e.context or 'not valid YAML'}") from e
    except yaml.YAMLError as e:
        raise UserFileError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    except ValueError as e:  # json.JSONDecodeError, or a duplicate key
        raise UserFileError(f"{path}: not valid JSON ({e})") from e


def unknown_key(key: object, known: Iterable[str]) -> str:
    """`unknown key 'authority_treshold' (did you mean 'authority_threshold'?)`."""
    names = list(known)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(names)
    return f"unknown key {key!r} ({hint})"


def check_keys(doc: dict[Any, Any], known: Iterable[str]) -> str | None:
    """The first key of `doc` not in `known`, described; None if all are known."""
    names = list(known)
    for key in doc:
        if key not in names:
            return unknown_key(key, names)
    return None
