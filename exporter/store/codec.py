"""Encoding of Redis stream fields and ticker values, shared by the writer and the reader.

Stream fields are flat strings: str as is, numbers as text, None as "", containers as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

JSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def encode_value(value: Any) -> str:
    """Stream field encoding: str as is, numbers as text, None as "", containers as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, int):
        return str(int(value))
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        obj = list(value) if isinstance(value, set | frozenset) else value
        return orjson.dumps(obj, default=str, option=JSON_OPTS).decode()
    return str(value)


def flatten(entry: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in entry.items():
        out.append(str(k))
        out.append(encode_value(v))
    return out


def decode_json(value: str) -> Any:
    if value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def decode_number(value: str) -> Any:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return decode_json(value)
