"""Which source files a workflow job really runs: the static import graph of the mlaflow package.

Snakemake does not rerun a job when the Python code it imports changes, so every rule lists its code as input
files. Listing whole packages makes one edit rerun everything (editing `tate.py` would retrain every method);
listing modules by hand goes stale. Instead each rule names the modules its step starts from (`entry`), and its
code inputs are those modules, every mlaflow module they import (at any depth, imports inside functions
included) and the `__init__.py` of every package on the way (Python runs them on import). Modules loaded
through a registry by name (a method, an encoder) are not static imports: the rule names them as entries.

`mlaflow/cli.py` only parses arguments and calls a step's function; it is not a code input of any job (editing
a help string must not rerun the workflow).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = "mlaflow"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # src/


def module_file(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The file of a dotted module name inside `root` (a package's __init__.py), or None."""
    path = root.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _imports(module: str, path: Path, root: Path) -> set[str]:
    """The mlaflow modules `module` imports (absolute and relative, at any nesting level)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from mlaflow.methods import mla`: mla may be a submodule
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {
        name
        for name in found
        if (name == PACKAGE or name.startswith(PACKAGE + ".")) and module_file(name, root)
    }


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _closure(module: str, root: Path) -> frozenset[str]:
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        for candidate in _with_parents(name):
            if candidate in seen:
                continue
            path = module_file(candidate, root)
            if path is None:
                raise ValueError(f"no module {candidate} under {root}")
            seen.add(candidate)
            pending.extend(_imports(candidate, path, root))
    return frozenset(seen)


def code_files(*entries: str, root: Path = SOURCE_ROOT) -> list[str]:
    """Sorted paths of the source files that the entry modules run (see the module docstring)."""
    modules: set[str] = set()
    for entry in entries:
        modules |= _closure(entry, root)
    return sorted(str(module_file(m, root)) for m in modules)
