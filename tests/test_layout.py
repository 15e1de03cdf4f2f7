"""The package's rooms stand on floors: a module imports only from its own floor or below, so that a change touches
one room and no import goes in a circle. Read from the static import graph (mlaflow.pipeline.codedeps), imports
inside functions included."""

from __future__ import annotations

from mlaflow.pipeline import codedeps

# bottom to top; a top-level module or a package, by its first name under mlaflow
FLOORS = [
    {"errors", "io", "keys", "devices", "provenance", "joblock", "runtime"},  # utilities
    {"data"},  # corpora, manifest, folds, masks
    {"features"},  # encoders behind one protocol, one HDF5 store
    {"methods"},  # one module per method, one registry, what methods share (space, optim, base)
    {"train"},  # the one training loop and the training job
    {"tune"},  # the tuning stage, above training
    {"pipeline"},  # the workflow's plumbing: config, experiment table, job configs, code inputs, DVC helpers
    {"report"},
    {"cli", "__main__"},
]


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(module: str) -> int:
    room = _room(module)
    return next(i for i, rooms in enumerate(FLOORS) if room in rooms) if room != "__init__" else -1


def test_every_module_imports_only_from_its_floor_or_below():
    root = codedeps.SOURCE_ROOT
    modules = [
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in (root / "mlaflow").rglob("*.py")
    ]
    assert {_room(m) for m in modules} - {"__init__"} == set().union(*FLOORS)  # every room has a floor
    upward = []
    for module in modules:
        for imported in codedeps._imports(module, codedeps.module_file(module, root), root):
            if _floor(imported) > _floor(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, upward


def test_the_floors_the_issue_names():
    order = [
        next(i for i, rooms in enumerate(FLOORS) if room in rooms) for room in ("methods", "train", "tune")
    ]
    assert order == sorted(order)  # tune above train above methods
