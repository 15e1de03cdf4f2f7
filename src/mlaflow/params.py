"""params.yaml: loading, validation against the JSON schema, and hashing.

The same schema file (`workflow/schemas/params.schema.yaml`) is used by the Snakefile at parse time and by
the CLI, so a wrong key or value fails the same way whichever entry point a user takes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mlaflow.errors import ParamsError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"
MODALITIES = ("audio", "visual", "text")  # fixed order: index m in every [N, M] mask and [M, B, C] tensor


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(params: dict) -> dict:
    """Validate `params` against the schema; raise ParamsError naming the offending key."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = ".".join([*map(str, err.absolute_path), extra[0]]) if extra else key
            raise ParamsError(key, "unknown key", "remove it or correct its spelling (see workflow/schemas/params.schema.yaml)")
        raise ParamsError(key, err.message, "see workflow/schemas/params.schema.yaml for allowed values")
    for method in [*params["methods"], *params["complete_modality_methods"], *params["missing_suite"]["methods"],
                   *params["isolation"]["methods"]]:
        if method not in params["method_params"]:
            raise ParamsError(f"method_params.{method}", "missing for a method listed in `methods`",
                              f"add a `{method}:` entry under method_params")
    emb = params["corpus"]["embedded"]
    if emb["min_duration_s"] > emb["max_duration_s"]:
        raise ParamsError("corpus.embedded.min_duration_s", "larger than max_duration_s")
    for rate in params["missing_suite"]["missing_rates"]:
        if rate not in params["masks"]["missing_rates"]:
            raise ParamsError("missing_suite.missing_rates", f"{rate} is not in masks.missing_rates",
                              "use rates of masks.missing_rates (the suite shares the main grid's masks)")
    isolation = params["isolation"]
    if isolation["enabled"]:
        # share 0.0 of the isolation curves is the main grid's complete-data run of each method
        for method in isolation["methods"]:
            at_rate_0 = (method in params["methods"] and 0.0 in params["masks"]["missing_rates"]) or \
                method in params["complete_modality_methods"]
            if not at_rate_0:
                raise ParamsError("isolation.methods", f"{method!r} has no missing-rate-0 run in the main grid",
                                  f"add {method!r} to complete_modality_methods (or to methods with 0.0 in "
                                  "masks.missing_rates), or remove it from isolation.methods")
    fidelity = params["fidelity"]
    if fidelity["enabled"]:
        # the fidelity experiment compares against the main grid's runs, so those must exist
        needed = {"methods": ["mla", *fidelity["protocol_methods"]]}
        for method in needed["methods"]:
            if method not in params["methods"]:
                raise ParamsError("methods", f"the fidelity experiment needs {method!r} in the main grid",
                                  f"add {method!r} to methods, or set fidelity.enabled: false")
        for rate in fidelity["missing_rates"]:
            if rate not in params["masks"]["missing_rates"]:
                raise ParamsError("fidelity.missing_rates", f"{rate} is not in masks.missing_rates",
                                  "use rates of the main grid (its MLA runs are the paper baseline)")
        for name in fidelity["variants"]:
            if name == "paper" or name.startswith("masks_"):
                raise ParamsError(f"fidelity.variants.{name}", "reserved variant name", "choose another name")
    return params


def load(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(str(path), "file not found", "run from the repository root or pass --params")
    return validate(yaml.safe_load(path.read_text()))


def params_hash(params: dict, sections: tuple[str, ...] | None = None) -> str:
    """Short, stable hash of the given sections of params (all of them by default)."""
    selected = params if sections is None else {k: params[k] for k in sections}
    blob = json.dumps(selected, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# Which params sections decide each artefact. A run records the hash of its sections, and the report
# refuses runs whose hash differs from the current params (a stale result never reaches a table).
FEATURE_SECTIONS = ("corpus", "features")
RUN_SECTIONS = ("corpus", "features", "splits", "masks", "method_params", "train")


def format_rate(rate: float) -> str:
    """Missing rate as it appears in file names: 0.3 -> '0.30'."""
    return f"{rate:.2f}"


def rate_key(rate: float) -> str:
    """Missing rate as a DVC metric key (no dots allowed): 0.3 -> 'r30'."""
    return f"r{round(rate * 100):02d}"


def get(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


# ------------------------------------------------------------------------------------ fidelity variants
# A variant is a named set of overrides of the paper default (params.yaml `fidelity.variants`), applied to
# method_params.mla, train and masks. "paper" is the main grid itself; "masks_<protocol>" trains the
# protocol_methods under the mask protocol other than masks.protocol.

PAPER_VARIANT = "paper"
MASK_PROTOCOLS = ("bernoulli", "cpm")


def other_protocol(params: dict) -> str:
    return next(p for p in MASK_PROTOCOLS if p != params["masks"]["protocol"])


def variant_params(params: dict, variant: str) -> dict:
    """params with the variant's overrides applied (a deep copy; `params` is not changed)."""
    out = json.loads(json.dumps(params))
    if variant == PAPER_VARIANT:
        return out
    if variant.startswith("masks_") and variant[len("masks_"):] in MASK_PROTOCOLS:
        out["masks"]["protocol"] = variant[len("masks_"):]
        return out
    if variant in isolation_variants(params):
        out["masks"]["protocol"] = variant  # the isolation mask of that modality (mlaflow.data.masks)
        return out
    if variant not in params["fidelity"]["variants"]:
        raise ParamsError("fidelity.variants", f"unknown variant {variant!r}",
                          f"use one of {sorted(params['fidelity']['variants'])}")
    overrides = params["fidelity"]["variants"][variant]
    out["method_params"]["mla"].update(overrides.get("mla", {}))
    out["train"].update(overrides.get("train", {}))
    out["masks"].update(overrides.get("masks", {}))
    return out


def same_as_paper(params: dict, variant: str, missing_rate: float) -> bool:
    """True where a variant's runs would equal the paper runs exactly: at missing rate 0 nothing is masked, so a
    variant that only changes how masks are drawn or fed (masks.protocol, train.masked_input) changes nothing."""
    if missing_rate != 0:
        return False
    if variant.startswith("masks_") or variant.startswith(ISOLATION_PREFIX):
        return True
    overrides = params["fidelity"]["variants"].get(variant, {})
    return not overrides.get("mla") and set(overrides.get("train", {})) <= {"masked_input"}


def fidelity_grid(params: dict) -> list[tuple[str, str, list[float]]]:
    """The runs the fidelity experiment trains beyond the main grid: (variant, method, missing rates). Cells that
    would equal the paper runs (`same_as_paper`) are not trained; the report uses the paper runs there."""
    fidelity = params["fidelity"]
    if not fidelity["enabled"]:
        return []
    grid = [(name, "mla", fidelity["missing_rates"]) for name in fidelity["variants"]]
    masks_variant = f"masks_{other_protocol(params)}"
    grid += [(masks_variant, method, params["masks"]["missing_rates"]) for method in fidelity["protocol_methods"]]
    return [(variant, method, [r for r in rates if not same_as_paper(params, variant, r)])
            for variant, method, rates in grid]


# ---------------------------------------------------------------------------- isolation and missing suite
# Isolation analysis (Figure 2): variant "isolate_<modality>" masks that modality in a share of the training
# samples (its "missing rate"); its mask protocol has the same name. The missing-modality suite (Table 2)
# trains other methods under the paper's own settings: variant "paper", its runs kept apart under data/suite.

ISOLATION_PREFIX = "isolate_"
ISOLATION_PROTOCOLS = tuple(ISOLATION_PREFIX + m for m in MODALITIES)


def isolation_variants(params: dict) -> list[str]:
    return [ISOLATION_PREFIX + m for m in params["isolation"]["modalities"]] if params["isolation"]["enabled"] else []


def isolation_grid(params: dict) -> list[tuple[str, str, list[float]]]:
    """(variant, method, training missing rates) of the isolation analysis; share 0.0 is the paper runs."""
    rates = params["isolation"]["training_missing_rates"]
    return [(variant, method, rates) for variant in isolation_variants(params) for method in params["isolation"]["methods"]]


def suite_grid(params: dict) -> list[tuple[str, float]]:
    """(method, missing rate) cells of the missing-modality suite that the main grid does not already train."""
    main = {(m, r) for m in params["methods"] for r in params["masks"]["missing_rates"]}
    main |= {(m, 0.0) for m in params["complete_modality_methods"]}
    return [(m, r) for m in params["missing_suite"]["methods"] for r in params["missing_suite"]["missing_rates"]
            if (m, r) not in main]


def params_for_method(params: dict, method: str) -> dict:
    """params with `train` as `method` trains: train.method_optimizers[method] (its reference's optimiser and
    learning rate) replacing train.optimizer and train.lr. A copy; `params` is not changed."""
    out = json.loads(json.dumps(params))
    out["train"].update(params["train"]["method_optimizers"].get(method, {}))
    return out
