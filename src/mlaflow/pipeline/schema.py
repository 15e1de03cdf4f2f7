"""Validation of a config against params.yaml's JSON schema (draft 2020-12), in one pass: coerce, fill, check.

`validate(instance, schema)` returns a NEW config (the instance is never changed):

1. Coercion (`coerce`): a string where the schema expects an integer, a number, a boolean or null becomes that
   value when it parses cleanly: "3" -> 3, "0.1" / "1e-3" -> float, "true" / "false" (any case) -> bool,
   "null" / "~" -> None. Snakemake's `--config section={key: value}` hands nested values over as strings.
   A boolean where the schema expects one of the strings off/on (no/yes) becomes that string: YAML 1.2
   writers (DVC's `-S`) leave `off` unquoted, and a YAML 1.1 reader (PyYAML, Snakemake) reads it as false.
   Where the schema also accepts a string (type [string, "null"], an enum of strings) the string is kept;
   a string that does not parse ("three", "yes", "3.5" for an integer) is kept too, and fails in step 3.
   Subschemas are followed through `$ref` (local, "#/..."), `properties`, `additionalProperties` and `items`;
   `type` may be a list, tried in order; without `type`, the types of `enum` / `const` values count.
2. Defaults (`fill_defaults`): every key the schema gives a `default` and the config lacks is set to a deep copy
   of it, recursively: an object created from `default: {}` gets its own keys' defaults, and so on down. Only
   `properties` declare defaults; the values of free-keyed maps (`additionalProperties`) are filled with that
   subschema's defaults, if it has any.
3. Validation with `jsonschema.Draft202012Validator`. The first error (by position in the config) raises
   `mlaflow.errors.ParamsError` naming the dotted key: for an unknown key the key itself (`train.epochz`); for a
   missing required key that key (`train.seeds`); otherwise the key that holds the wrong value, with the
   schema's message and, in the fix, that key's `description`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import jsonschema

from mlaflow.errors import ParamsError

SCHEMA_FILE = "workflow/schemas/params.schema.yaml"
UNKNOWN_KEY_FIX = f"remove it or correct its spelling (see {SCHEMA_FILE})"

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NULLS = ("null", "Null", "NULL", "~")
_JSON_TYPES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (type(None), "null"),
    (list, "array"),
    (dict, "object"),
)


# ------------------------------------------------------------------------------------------------ the API


def validate(instance: dict, schema: dict) -> dict:
    """A new config: `instance` coerced, filled with the schema's defaults and validated against `schema`.

    Raises ParamsError naming the dotted key of the first error."""
    config = fill_defaults(coerce(instance, schema), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: _sort_key(e.absolute_path))
    if errors:
        raise _params_error(errors[0], schema)
    return config


def coerce(instance: Any, schema: dict) -> Any:
    """A copy of `instance` with strings turned into the integer, number, boolean or null that the schema expects
    where they parse cleanly (see the module docstring); everything else is copied unchanged."""
    return _coerce(instance, schema, schema)


def fill_defaults(instance: Any, schema: dict) -> Any:
    """A copy of `instance` with every missing key that has a `default` in the schema set to it, recursively."""
    return _fill(copy.deepcopy(instance), schema, schema)


def description_at(schema: dict, path: Iterable[str | int]) -> str | None:
    """The description of the deepest schema node along `path` (keys and list indices of a config) that has one.

    A node's own description wins over that of the `$ref` it points to."""
    node, found = schema, schema.get("description")
    for part in path:
        node = _child(node, part, schema)
        if node is None:
            break
        own = node.get("description") or _resolve(node, schema).get("description")
        found = own or found
    return found


# ------------------------------------------------------------------------------------------ schema walking


def _resolve(node: dict, root: dict) -> dict:
    """`node` with its `$ref` (a local JSON pointer, "#/..."), followed recursively, merged in; the node's own
    keywords win over the target's."""
    if not isinstance(node, dict) or "$ref" not in node:
        return node if isinstance(node, dict) else {}
    ref = node["$ref"]
    if not ref.startswith("#"):
        return {k: v for k, v in node.items() if k != "$ref"}  # remote references: not followed
    target: Any = root
    for token in filter(None, ref[1:].split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        target = target[int(token)] if isinstance(target, list) else target[token]
    merged = dict(_resolve(target, root))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _child(node: dict, part: str | int, root: dict) -> dict | None:
    """The subschema of key or index `part` of an instance of `node` (None where the schema has none)."""
    node = _resolve(node, root)
    if isinstance(part, int):
        items = node.get("items")
        return items if isinstance(items, dict) else None
    if part in node.get("properties", {}):
        return node["properties"][part]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _expected_types(node: dict) -> list[str]:
    if "type" in node:
        kind = node["type"]
        return [kind] if isinstance(kind, str) else list(kind)
    values = node.get("enum", [node["const"]] if "const" in node else [])
    return [name for cls, name in _JSON_TYPES if any(type(v) is cls for v in values)]


# ---------------------------------------------------------------------------------------------- coercion


def _coerce(value: Any, node: dict, root: dict) -> Any:
    node = _resolve(node, root)
    if isinstance(value, str):
        return _parse(value, _expected_types(node))
    if isinstance(value, bool) and "boolean" not in _expected_types(node):
        return _yaml11_word(value, node.get("enum", []))
    if isinstance(value, dict):
        return {
            key: _coerce(item, sub, root)
            if (sub := _child(node, key, root)) is not None
            else copy.deepcopy(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        items = node.get("items")
        return [
            _coerce(item, items, root) if isinstance(items, dict) else copy.deepcopy(item) for item in value
        ]
    return copy.deepcopy(value)


def _yaml11_word(value: bool, enum: list) -> Any:
    """An option spelled off/on (no/yes) that a YAML 1.1 reader (PyYAML, hence Snakemake) took for a boolean:
    YAML 1.2 writers leave it unquoted, and `dvc exp run -S` / `dvc params` rewrite params.yaml that way."""
    for word in ("on", "yes") if value else ("off", "no"):
        if word in enum:
            return word
    return value


def _parse(text: str, types: list[str]) -> Any:
    """`text` as the first of `types` it parses cleanly as; unchanged if the schema accepts a string (or
    nothing parses)."""
    if "string" in types:
        return text
    stripped = text.strip()
    for kind in types:
        if kind == "integer" and _INTEGER.fullmatch(stripped):
            return int(stripped)
        if kind == "number" and _NUMBER.fullmatch(stripped):
            return int(stripped) if _INTEGER.fullmatch(stripped) else float(stripped)
        if kind == "boolean" and stripped.lower() in ("true", "false"):
            return stripped.lower() == "true"
        if kind == "null" and stripped in _NULLS:
            return None
    return text


# ---------------------------------------------------------------------------------------------- defaults


def _fill(value: Any, node: dict, root: dict) -> Any:
    node = _resolve(node, root)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key, sub in properties.items():
            if key not in value:
                resolved = _resolve(sub, root)
                if "default" in resolved:
                    value[key] = copy.deepcopy(resolved["default"])
        extra = node.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, extra)
            if isinstance(sub, dict):
                value[key] = _fill(value[key], sub, root)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_fill(item, node["items"], root) for item in value]
    return value


# ------------------------------------------------------------------------------------------------ errors


def _sort_key(path: Iterable[str | int]) -> list[tuple[int, Any]]:
    """Order errors by position in the config; indices before keys so that mixed paths compare."""
    return [(0, p) if isinstance(p, int) else (1, str(p)) for p in path]


def _dotted(parts: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in parts)


def _params_error(err: jsonschema.ValidationError, schema: dict) -> ParamsError:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        key = _dotted([*path, extra[0]]) if extra else (_dotted(path) or "<top level>")
        return ParamsError(key, "unknown key", UNKNOWN_KEY_FIX)
    problem, fix = err.message, f"give it a value the schema allows ({SCHEMA_FILE})"
    if "propertyNames" in err.absolute_schema_path:
        # a key that is a name (a fidelity variant, a modality): the error is about the key itself
        key = _dotted([*path, err.instance])
        description = description_at(schema, [*path, err.instance])
        return ParamsError(
            key,
            f"{err.instance!r} is not a valid name ({err.message})",
            "rename it: a letter, then letters, digits and underscores (names become folders and job names)"
            + (f"; about this key: {description}" if description else ""),
        )
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        if missing:
            path = [*path, missing[0]]
            problem, fix = "missing (it has no default)", f"add it to the config ({SCHEMA_FILE})"
    key = _dotted(path) or "<top level>"
    description = description_at(schema, path)
    return ParamsError(key, problem, f"{fix}; about this key: {description}" if description and path else fix)
