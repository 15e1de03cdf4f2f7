"""The params schema documents every key, gives every key but five a default, and is applied in one pass
(mlaflow.pipeline.schema.validate: coerce strings, fill defaults, validate)."""

import copy

import jsonschema
import pytest
import yaml

from mlaflow.errors import ParamsError
from mlaflow.pipeline import params as P
from mlaflow.pipeline import schema as S

SCHEMA = P.load_schema()
# the keys that define an experiment: a config must state them, the schema gives them no default
WITHOUT_DEFAULT = ("corpus.kind", "methods", "masks.missing_rates", "splits.folds", "train.seeds")
NEW_KEYS = {
    "features.text.encoder": "bert",
    "features.audio.encoder": "wav2vec2",
    "features.audio.n_mels": 128,
    "features.visual.encoder": "manet",
}


def _shipped() -> dict:
    return yaml.safe_load((P.REPO_ROOT / "params.yaml").read_text())


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _minimal(source: dict) -> dict:
    """A config with only the keys without a default, valued as in `source`."""
    config: dict = {}
    for key in WITHOUT_DEFAULT:
        _set(config, key, copy.deepcopy(_get(source, key)))
    return config


def _walk(node, path=""):
    """Every (path, subschema) of the schema: through properties, $defs, items, additionalProperties, ..."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            if key in ("properties", "$defs") and isinstance(value, dict):
                for name, sub in value.items():
                    yield from _walk(sub, f"{path}/{key}/{name}")
            elif key not in ("default", "enum", "const", "required", "examples"):
                yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}/{i}")


def _properties_with_defaults(node, prefix=""):
    """(dotted key, subschema) of every property reachable from the root through `properties` alone (the keys
    of params.yaml; the values of free-keyed maps are overrides, not keys with one shipped value)."""
    for name, sub in node.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        yield dotted, sub
        yield from _properties_with_defaults(sub, dotted + ".")


# ------------------------------------------------------------------------------------------ documentation


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_property_and_every_def_has_a_description():
    undocumented, n_checked = [], 0
    for path, node in _walk(SCHEMA):
        for section in ("properties", "$defs"):
            for name, sub in node.get(section, {}).items():
                n_checked += 1
                description = sub.get("description") if isinstance(sub, dict) else None
                if not isinstance(description, str) or not description.strip():
                    undocumented.append(f"{path}/{section}/{name}")
    assert n_checked > 190  # the walk reaches the nested maps (and the values of free-keyed maps)
    assert not undocumented, undocumented


def test_every_key_has_a_default_except_those_that_define_the_experiment_and_required_lists_only_those():
    keys = dict(_properties_with_defaults(SCHEMA))
    # a default that follows other keys (x-default-follows) is filled by mlaflow.pipeline.params, not by the schema
    without = sorted(k for k, sub in keys.items() if "default" not in sub and "x-default-follows" not in sub)
    # those five, and the objects that hold them (corpus, masks, splits, train: a config must state them too)
    holders = {key.rsplit(".", 1)[0] for key in WITHOUT_DEFAULT if "." in key}
    assert without == sorted({*WITHOUT_DEFAULT, *holders})
    for _, node in [("", SCHEMA), *keys.items()]:
        if "properties" in node:
            assert sorted(node.get("required", [])) == sorted(
                k
                for k, sub in node["properties"].items()
                if "default" not in sub and "x-default-follows" not in sub
            )
    # an object whose keys all have defaults may be omitted as a whole
    for dotted, sub in keys.items():
        if (
            sub.get("type") == "object"
            and "properties" in sub
            and all("default" in s or "x-default-follows" in s for s in sub["properties"].values())
        ):
            assert sub["default"] == {}, dotted
    for dotted in ("train.method_optimizers", "fidelity.variants"):  # free-keyed maps: the shipped value
        assert keys[dotted]["default"] == _get(_shipped(), dotted)


def test_new_feature_keys_are_in_the_schema_and_in_params_yaml():
    shipped, keys = _shipped(), dict(_properties_with_defaults(SCHEMA))
    for dotted, value in NEW_KEYS.items():
        assert _get(shipped, dotted) == value
        assert keys[dotted]["default"] == value
    assert keys["features.audio.encoder"]["enum"] == ["wav2vec2", "fbank", "fbank_spectrogram"]
    for bad in (
        {"features": {"audio": {"encoder": "mfcc"}}},
        {"features": {"audio": {"n_mels": 0}}},
        {"features": {"text": {"encoder": "roberta"}}},
        {"features": {"visual": {"encoder": "resnet"}}},
    ):
        config = {**_minimal(shipped), **bad}
        with pytest.raises(ParamsError):
            S.validate(config, SCHEMA)


# ------------------------------------------------------------------------------------------------ defaults


def test_shipped_params_validate_and_filling_changes_nothing():
    shipped = _shipped()
    assert S.fill_defaults(shipped, SCHEMA) == shipped
    assert S.coerce(shipped, SCHEMA) == shipped
    assert S.validate(shipped, SCHEMA) == shipped
    # params.yaml states every key but those whose default follows other keys (mlaflow.pipeline.params fills them)
    assert P.validate(shipped) == P.fill_following_defaults(copy.deepcopy(shipped)) != shipped


def test_a_config_of_the_keys_without_default_fills_to_the_shipped_params():
    shipped = _shipped()
    minimal = _minimal(shipped)
    assert set(minimal) == {"corpus", "methods", "masks", "splits", "train"}
    filled = S.validate(minimal, SCHEMA)
    assert filled == shipped  # every key, the new ones and nested maps included
    for dotted in NEW_KEYS:
        assert _get(filled, dotted) == _get(shipped, dotted)
    assert filled["features"]["text"]["embedded"] == {
        "num_layers": 2,
        "num_heads": 8,
        "intermediate_size": 1024,
    }
    assert P.validate(minimal) == P.validate(shipped)  # and the cross-key checks accept it
    assert minimal == _minimal(shipped)  # the input is not changed


def test_a_config_of_other_values_differs_from_the_shipped_params_only_there():
    values = {
        "corpus.kind": "iemocap",
        "methods": ["mla", "late_fusion", "sum"],
        "masks.missing_rates": [0.0, 0.5],
        "splits.folds": [2],
        "train.seeds": [11],
    }
    config: dict = {}
    for key, value in values.items():
        _set(config, key, value)
    filled = S.validate(config, SCHEMA)
    expected = _shipped()
    for key, value in values.items():
        _set(expected, key, value)
    assert filled == expected


def test_defaults_fill_partly_given_and_omitted_objects():
    config = {**_minimal(_shipped()), "features": {"audio": {"encoder": "fbank", "dim": 256}}}
    config["method_params"] = {"mmin": {"n_blocks": 3}}
    filled = S.validate(config, SCHEMA)
    audio = filled["features"]["audio"]
    assert (audio["encoder"], audio["dim"], audio["n_mels"], audio["layer"]) == ("fbank", 256, 128, "conv")
    assert audio["embedded"]["conv_dim"] == [64, 128, 256, 512]
    assert filled["features"]["text"] == _shipped()["features"]["text"]
    assert filled["method_params"]["mmin"] == {**_shipped()["method_params"]["mmin"], "n_blocks": 3}
    # a default that follows the corpus (x-default-follows) is filled by mlaflow.pipeline.params, after the schema
    assert "fixed_weights" not in filled["method_params"]["mla"]
    assert P.validate(config)["method_params"]["mla"]["fixed_weights"] == {
        "audio": 0.35,
        "visual": 0.25,
        "text": 0.40,
    }
    # a given free-keyed map replaces the default map as a whole; its entries get nothing added
    config["train"]["method_optimizers"] = {"ae": {"lr": 0.01}}
    assert S.validate(config, SCHEMA)["train"]["method_optimizers"] == {"ae": {"lr": 0.01}}


def test_filled_defaults_are_copies():
    first = S.validate(_minimal(_shipped()), SCHEMA)
    first["fidelity"]["variants"]["hgm_off"]["mla"]["head_gradient_modification"] = "paper"
    first["features"]["audio"]["embedded"]["conv_dim"].append(1024)
    second = S.validate(_minimal(_shipped()), SCHEMA)
    assert second == _shipped()


# ------------------------------------------------------------------------------------------------ coercion


def test_nested_strings_are_coerced_to_the_type_the_schema_expects():
    config = _minimal(_shipped())
    config["train"].update(epochs="3", standardize="false", lr="1e-3", seeds=["0", "1"])
    config["masks"]["missing_rates"] = ["0.1", "0.3"]
    config["method_params"] = {
        "mmin": {"teacher_epochs": "null"},
        "if_mmin": {"teacher_epochs": "4"},
        "tate": {"privileged": "True"},
    }
    config["features"] = {"half_precision": "FALSE", "text": {"precomputed": "~"}}
    filled = S.validate(config, SCHEMA)
    assert filled["train"]["epochs"] == 3 and type(filled["train"]["epochs"]) is int
    assert filled["train"]["standardize"] is False
    assert filled["train"]["lr"] == pytest.approx(0.001) and type(filled["train"]["lr"]) is float
    assert filled["train"]["seeds"] == [0, 1]
    assert filled["masks"]["missing_rates"] == [0.1, 0.3]
    assert all(type(r) is float for r in filled["masks"]["missing_rates"])
    assert filled["method_params"]["mmin"]["teacher_epochs"] is None
    assert filled["method_params"]["if_mmin"]["teacher_epochs"] == 4
    assert filled["method_params"]["tate"]["privileged"] is True
    assert filled["features"]["half_precision"] is False
    # where the schema accepts a string, a string stays one: "~" is a valid path of type [string, null]
    assert filled["features"]["text"]["precomputed"] == "~"
    # values of free-keyed maps are coerced through additionalProperties
    config["train"]["method_optimizers"] = {"ae": {"lr": "0.01"}}
    assert S.validate(config, SCHEMA)["train"]["method_optimizers"]["ae"]["lr"] == 0.01


def test_strings_the_schema_expects_as_strings_are_not_coerced():
    config = _minimal(_shipped())
    config["method_params"] = {"mla": {"head_gradient_modification": "off"}}  # an enum of strings
    config["report"] = {"paper_results": "1"}
    filled = S.validate(config, SCHEMA)
    assert filled["method_params"]["mla"]["head_gradient_modification"] == "off"
    assert filled["report"]["paper_results"] == "1"


@pytest.mark.parametrize(
    "dotted, text, expected_type",
    [
        ("train.epochs", "three", "integer"),
        ("train.epochs", "3.5", "integer"),
        ("train.standardize", "yes", "boolean"),
        ("train.lr", "fast", "number"),
        ("train.lr", "nan", "number"),
        ("method_params.mmin.teacher_epochs", "none", "integer"),
    ],
)
def test_a_string_that_does_not_parse_stays_a_string_and_fails_naming_the_key(dotted, text, expected_type):
    config = _minimal(_shipped())
    _set(config, dotted, text)
    assert _get(S.coerce(config, SCHEMA), dotted) == text
    with pytest.raises(ParamsError) as err:
        S.validate(config, SCHEMA)
    assert err.value.key == dotted
    assert (
        f"`{dotted}`" in str(err.value) and repr(text) in str(err.value) and expected_type in str(err.value)
    )


# -------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "dotted",
    [
        "train.epochz",
        "corpus.embedded_cremad.speech",
        "features.audio.nmels",
        "fidelity.variants.hgm_off.mla.epochs",
        "trian",
    ],
)
def test_an_unknown_key_fails_naming_it(dotted):
    config = _minimal(_shipped())
    if dotted.startswith("fidelity"):
        config["fidelity"] = {"variants": {"hgm_off": {"mla": {"head_gradient_modification": "off"}}}}
    _set(config, dotted, 1)
    with pytest.raises(ParamsError) as err:
        S.validate(config, SCHEMA)
    assert err.value.key == dotted
    assert "unknown key" in str(err.value)
    assert "remove it or correct its spelling (see workflow/schemas/params.schema.yaml)" in str(err.value)


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("train.epochs", 0),  # $ref positive_int: the key's own description, not the $def's
        ("features.audio.dim", 0),
        ("train.dropout", 0.95),
        ("method_params.ae.drop_rate", 1.5),
        ("corpus.embedded.sessions", 6),
        ("features.audio.n_mels", 0),
        ("splits.validation_fraction", 0.0),
    ],
)
def test_a_value_out_of_range_fails_naming_the_key_and_saying_what_it_is(dotted, value):
    config = _minimal(_shipped())
    _set(config, dotted, value)
    with pytest.raises(ParamsError) as err:
        S.validate(config, SCHEMA)
    description = dict(_properties_with_defaults(SCHEMA))[dotted]["description"]
    assert err.value.key == dotted
    assert f"`{dotted}`" in str(err.value)
    assert description in str(err.value)
    assert S.description_at(SCHEMA, dotted.split(".")) == description


def test_a_missing_key_without_default_fails_naming_it():
    for dotted in WITHOUT_DEFAULT:
        config = _minimal(_shipped())
        *parents, last = dotted.split(".")
        del (_get(config, ".".join(parents)) if parents else config)[last]
        with pytest.raises(ParamsError) as err:
            S.validate(config, SCHEMA)
        assert err.value.key == dotted
        assert "missing" in str(err.value)


def test_list_items_fail_naming_their_index():
    config = _minimal(_shipped())
    config["masks"]["missing_rates"] = [0.1, "1.5"]
    with pytest.raises(ParamsError) as err:
        S.validate(config, SCHEMA)
    assert err.value.key == "masks.missing_rates.1" and "1.5 is greater than the maximum" in str(err.value)


def test_params_validate_runs_the_cross_key_checks_on_the_filled_config():
    config = _minimal(_shipped())
    config["masks"]["missing_rates"] = ["0.0", "0.3", "0.7"]  # strings, coerced before the checks
    # missing_suite.missing_rates follows masks.missing_rates where the config leaves it out
    assert P.validate(config)["missing_suite"]["missing_rates"] == [0.3, 0.7]
    config["missing_suite"] = {"missing_rates": [0.1, 0.7]}  # a stated rate is checked against the masks'
    with pytest.raises(
        ParamsError, match=r"`missing_suite\.missing_rates`: 0\.1 is not in masks\.missing_rates"
    ):
        P.validate(config)
    config["missing_suite"] = {"missing_rates": [0.3]}
    filled = P.validate(config)
    assert filled["masks"]["missing_rates"] == [0.0, 0.3, 0.7] and filled["missing_suite"][
        "missing_rates"
    ] == [0.3]


def test_off_written_unquoted_by_a_yaml_1_2_writer_reads_as_the_option_not_a_boolean():
    # `dvc exp run -S ...` rewrites params.yaml with ruamel (YAML 1.2): "off" comes back unquoted, PyYAML and
    # Snakemake (YAML 1.1) read it as False
    import io

    from ruamel.yaml import YAML

    params = yaml.safe_load((P.REPO_ROOT / "params.yaml").read_text())
    params["method_params"]["mla"]["head_gradient_modification"] = "off"
    out = io.StringIO()
    YAML().dump(params, out)
    reread = yaml.safe_load(out.getvalue())
    assert reread["method_params"]["mla"]["head_gradient_modification"] is False
    assert P.validate(reread)["method_params"]["mla"]["head_gradient_modification"] == "off"


# ----------------------------------------------------------------------------- the configs the docs show


def _yaml_blocks(path):
    """(line, text) of every ```yaml block of a Markdown file."""
    blocks, lines, start = [], None, 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if lines is None and line.strip() == "```yaml":
            lines, start = [], number
        elif lines is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines)))
            lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


def _merged(base: dict, update: dict) -> dict:
    """Snakemake's merge of a --configfile onto params.yaml (maps key by key, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def documented_configs():
    """Every config the docs and .test/ show, exactly as written: a ```yaml block of README.md or docs/ whose keys
    are params keys (a whole config where it states the five keys without a default, else a fragment merged
    onto params.yaml, as `--configfile` merges it), and every .test/*.yaml (whole, or merged where a fragment)."""
    configs = []
    for doc in [P.REPO_ROOT / "README.md", *sorted((P.REPO_ROOT / "docs").rglob("*.md"))]:
        for line, text in _yaml_blocks(doc):
            config = yaml.safe_load(text)
            if not isinstance(config, dict) or not set(config) & set(SCHEMA["properties"]):
                continue  # not a config (a profile, a dvc.yaml excerpt)
            whole = all(_has(config, key) for key in WITHOUT_DEFAULT)
            configs.append(
                (f"{doc.relative_to(P.REPO_ROOT)}:{line}", config if whole else _merged(_shipped(), config))
            )
    for test_config in sorted((P.REPO_ROOT / ".test").glob("*.yaml")):
        config = yaml.safe_load(
            test_config.read_text()
        )  # a fragment (paper_budget.yaml) merges onto params.yaml
        whole = all(_has(config, key) for key in WITHOUT_DEFAULT)
        configs.append(
            (str(test_config.relative_to(P.REPO_ROOT)), config if whole else _merged(_shipped(), config))
        )
    return configs


def _has(config: dict, dotted: str) -> bool:
    try:
        _get(config, dotted)
    except (KeyError, TypeError):
        return False
    return True


def test_every_config_the_docs_and_test_folder_show_is_valid_as_written():
    configs = documented_configs()
    names = [name for name, _ in configs]
    assert any(name.startswith(".test/features") for name in names) and len(configs) >= 5, names
    for name, config in configs:
        P.validate(config, source=name, check_files=False)


def test_defaults_that_follow_other_keys_follow_them():
    """A whole config that changes the rates, folds, seeds or modalities is valid without restating the keys
    whose defaults depend on them (README's 'Bringing your own features' example failed on them)."""
    config = {
        "corpus": {"kind": "embedded_cremad"},
        "methods": ["mla", "late_fusion"],
        "masks": {"missing_rates": [0.0, 0.2, 0.6]},
        "splits": {"folds": [3]},
        "train": {"seeds": [4, 5]},
    }
    out = P.validate(config)
    assert out["corpus"]["label_setup"] == "6class"
    assert out["missing_suite"]["missing_rates"] == [0.2, 0.6]
    assert out["tuning"]["folds"] == [3] and out["tuning"]["run_seed"] == 4
    assert out["tuning"]["missing_rates"] == [0.2]
    assert out["fidelity"]["missing_rates"] == [0.0, 0.2, 0.6]
    assert out["isolation"]["modalities"] == ["audio", "visual"]
    assert out["method_params"]["film"]["condition"] == "audio" == out["method_params"]["bigated"]["gate"]
    assert out["method_params"]["mla"]["fixed_weights"] == {"audio": 0.5, "visual": 0.5}
    # the shipped values: params.yaml leaves these keys out and gets what it stated before
    shipped = P.validate(_shipped())
    assert shipped["missing_suite"]["missing_rates"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert shipped["tuning"]["folds"] == [1, 2] and shipped["tuning"]["missing_rates"] == [0.3]
    assert shipped["fidelity"]["missing_rates"] == [0.0, 0.3, 0.7]
    assert shipped["method_params"]["mla"]["fixed_weights"] == {"audio": 0.35, "visual": 0.25, "text": 0.40}
    # a stated value wins
    config["tuning"] = {"folds": [3], "missing_rates": [0.6]}
    assert P.validate(config)["tuning"]["missing_rates"] == [0.6]


def test_every_key_whose_default_follows_others_is_filled():
    follows = []

    def walk(node, path):
        node = S._resolve(node, SCHEMA)
        if "x-default-follows" in node:
            follows.append(path)
        for key, sub in node.get("properties", {}).items():
            walk(sub, [*path, key])

    walk(SCHEMA, [])
    config = P.validate(_shipped())
    assert len(follows) == 10
    for path in follows:
        assert _has(config, ".".join(path)), path
