"""The config reference (docs/config-reference.md), generated from the schema of params.yaml.

Every key of `workflow/schemas/params.schema.yaml`, in schema order, `$ref`s resolved: its dotted path, its type
and allowed values (enums, ranges, patterns, lengths), its default (or the `x-default-follows` text of a default
that follows other keys, or "required"), and its description. A map with keys of the user's choosing (a
fidelity variant, a method's optimiser) shows them as `<name>`, `<method>` or `<key>`.

    python -m mlaflow.pipeline.configref docs/config-reference.md      # what `make docs` runs

tests/test_docs.py fails when the file differs from what `render` makes of the schema.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlaflow.pipeline.params import load_schema
from mlaflow.pipeline.schema import SCHEMA_FILE

OUTPUT = "docs/config-reference.md"
# the depth of the maps that may get a heading of their own (corpus.embedded, method_params.mla)
SECTION_DEPTH = 2


def render(schema: dict) -> str:
    """The whole reference as Markdown."""
    sections = list(schema.get("properties", {}))
    lines = [
        "<!-- Generated from workflow/schemas/params.schema.yaml by `make docs` "
        "(python -m mlaflow.pipeline.configref); do not edit. tests/test_docs.py checks that it is current. -->",
        "",
        "# Config reference",
        "",
        _text(schema.get("description", "")),
        "",
        "Every key below, in the schema's order: its dotted path, its type and allowed values, its default, and "
        "what it does. A default that depends on other keys (*follows*) is computed from them where the config "
        "leaves the key out (`fill_following_defaults` in `src/mlaflow/pipeline/params.py`). `<name>`, "
        "`<method>` and `<key>` stand for keys of your choosing. How to give a config: "
        "[operating.md](operating.md#running-with-another-config).",
        "",
        "Sections: " + ", ".join(f"[{name}](#{anchor(name)})" for name in sections) + ".",
    ]
    required = set(schema.get("required", []))
    for name, node in schema.get("properties", {}).items():
        lines += ["", f"## {name}", ""]
        lines += _entry(name, node, schema, name in required)
        keys = list(_walk(node, name, schema, 1))
        # a section whose keys include maps of named keys (corpus.embedded, method_params.mla) gets a heading
        # per map below it
        sectioned = any(
            depth == SECTION_DEPTH and _resolve(c, schema).get("properties") for depth, _, c, _ in keys
        )
        for depth, path, child, is_required in keys:
            if sectioned and depth == SECTION_DEPTH and _is_map(_resolve(child, schema)):
                lines += ["", f"### `{path}`", ""]
            lines += _entry(path, child, schema, is_required)
    return "\n".join(lines) + "\n"


def write(path: str | Path = OUTPUT) -> None:
    """Render the schema (workflow/schemas/params.schema.yaml) into `path`."""
    Path(path).write_text(render(load_schema()))


# ------------------------------------------------------------------------------------------ schema walking


def _resolve(node: Any, root: dict) -> dict:
    """`node` with its local `$ref` followed (recursively) and merged in; the node's own keywords win."""
    if not isinstance(node, dict):
        return {}
    if "$ref" not in node or not str(node["$ref"]).startswith("#/"):
        return node
    target: Any = root
    for token in node["$ref"][2:].split("/"):
        target = target[token.replace("~1", "/").replace("~0", "~")]
    merged = dict(_resolve(target, root))
    merged.update({key: value for key, value in node.items() if key != "$ref"})
    return merged


def _is_map(node: dict) -> bool:
    return node.get("type") == "object" or _has_keys(node)


def _has_keys(node: dict) -> bool:
    return bool(node.get("properties")) or isinstance(node.get("additionalProperties"), dict)


def _placeholder(node: dict) -> str:
    """How a free key of a map is written: after its propertyNames' `$defs` entry (`<method>`, `<name>`)."""
    ref = (node.get("propertyNames") or {}).get("$ref", "")
    return f"<{ref.rsplit('/', 1)[-1]}>" if ref.startswith("#/$defs/") else "<key>"


def _walk(node: dict, path: str, root: dict, depth: int) -> Iterator[tuple[int, str, dict, bool]]:
    """(depth, dotted path, subschema, required) of every key below `node`, in schema order, depth first."""
    node = _resolve(node, root)
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        yield depth + 1, f"{path}.{key}", child, key in required
        yield from _walk(child, f"{path}.{key}", root, depth + 1)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        free = f"{path}.{_placeholder(node)}"
        yield depth + 1, free, extra, False
        yield from _walk(extra, free, root, depth + 1)


# ------------------------------------------------------------------------------------------------ entries


def _entry(path: str, node: dict, root: dict, required: bool) -> list[str]:
    resolved = _resolve(node, root)
    head = f"- **`{path}`**: {_kind(resolved, root)}. {_default(resolved, required)}"
    description = node.get("description") or resolved.get("description")
    return [head + ("\\" if description else ""), *([f"  {_text(description)}"] if description else [])]


def _default(node: dict, required: bool) -> str:
    if required:
        return "**Required** (no default)."
    if "x-default-follows" in node:
        return f"Default follows: {_text(node['x-default-follows'])}."
    if "default" not in node:
        return "Optional (no default)."
    value = node["default"]
    if value == {} and _has_keys(node):
        return "Default: each key its own default."
    return f"Default: `{_value(value)}`."


def _kind(node: dict, root: dict) -> str:
    """The type and allowed values of a (resolved) subschema, in words."""
    if "enum" in node:
        return "one of " + ", ".join(f"`{_value(v)}`" for v in node["enum"])
    if "const" in node:
        return f"exactly `{_value(node['const'])}`"
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    types.sort(key=lambda kind: kind != "null")  # "null or a list ..." reads unambiguously
    words = []
    for kind in types:
        if kind in ("integer", "number"):
            words.append(" ".join(filter(None, [kind, _bounds(node)])))
        elif kind == "string":
            words.append(_string(node))
        elif kind == "array":
            words.append(_array(node, root))
        elif kind == "object":
            words.append(_object(node, root))
        else:
            words.append(kind)
    if not words and _has_keys(node):
        words.append(_object(node, root))
    return " or ".join(words) or "any value"


def _bounds(node: dict) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f"from {_value(low)} to {_value(high)}"
    parts = []
    if low is not None:
        parts.append(f">= {_value(low)}")
    if "exclusiveMinimum" in node:
        parts.append(f"> {_value(node['exclusiveMinimum'])}")
    if high is not None:
        parts.append(f"<= {_value(high)}")
    if "exclusiveMaximum" in node:
        parts.append(f"< {_value(node['exclusiveMaximum'])}")
    return ", ".join(parts)


def _string(node: dict) -> str:
    non_empty = node.get("minLength") == 1
    lengths = _count(
        {**node, "minLength": None} if non_empty else node, "minLength", "maxLength", "characters"
    )
    words = ("non-empty string" if non_empty else "string") + (f" ({lengths})" if lengths else "")
    return words + (f" matching `{node['pattern']}`" if "pattern" in node else "")


def _count(node: dict, low_key: str, high_key: str, noun: str) -> str:
    low, high = node.get(low_key), node.get(high_key)
    if high is None and low == 1:
        noun = noun.removesuffix("s")
    if low is not None and high is not None:
        return f"{low} to {high} {noun}"
    if low is not None:
        return f"at least {low} {noun}"
    if high is not None:
        return f"at most {high} {noun}"
    return ""


def _array(node: dict, root: dict) -> str:
    details = [_count(node, "minItems", "maxItems", "items"), "no repeats" if node.get("uniqueItems") else ""]
    head = "list" + (f" ({', '.join(filter(None, details))})" if any(details) else "")
    items = node.get("items")
    return f"{head}, each: {_kind(_resolve(items, root), root)}" if isinstance(items, dict) else head


def _object(node: dict, root: dict) -> str:
    details = [_count(node, "minProperties", "maxProperties", "keys")]
    names = node.get("propertyNames")
    if isinstance(names, dict):
        details.append(f"key names: {_kind(_resolve(names, root), root)}")
    if isinstance(node.get("additionalProperties"), dict):
        details.append(f"{'other ' if node.get('properties') else ''}keys: `{_placeholder(node)}` below")
    elif node.get("additionalProperties") is False:
        details.append("only the keys below" if node.get("properties") else "no keys")
    return "map" + (f" ({'; '.join(filter(None, details))})" if any(details) else "")


# ------------------------------------------------------------------------------------------------ text


def _value(value: Any) -> str:
    """A value as it would be written in params.yaml (flow style for lists and maps)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return f"{value:.1f}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and "`" not in value and _reads_back(value):
        return value
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=math.inf).strip()


def _reads_back(text: str) -> bool:
    """Whether YAML reads `text`, unquoted, as that very string (`off` it reads as false)."""
    try:
        return yaml.safe_load(text) == text
    except yaml.YAMLError:
        return False


_MARKUP = re.compile(r"[\\*]|<(?=[A-Za-z/!?])")  # emphasis, escapes, and what would open an HTML tag


def _text(text: str) -> str:
    """Schema prose as Markdown: one line, characters Markdown would read as markup escaped outside code spans."""
    parts = " ".join(str(text).split()).split("`")
    return "`".join(part if i % 2 else _escape(part) for i, part in enumerate(parts))


def _escape(part: str) -> str:
    return _MARKUP.sub(lambda m: "&lt;" if m[0] == "<" else "\\" + m[0], part)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else OUTPUT)
    write(out)
    print(f"{out}: the config reference, written from {SCHEMA_FILE}")


if __name__ == "__main__":
    main(sys.argv[1:])
