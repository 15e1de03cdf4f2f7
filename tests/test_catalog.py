"""The report's outputs are declared once (mlaflow/report/catalog.py): dvc.yaml agrees with the catalog, every
output in its stage as its kind says and nothing else under reports/; the DVC plots are long-format data that
a template draws one line per series, so dvc.yaml names no method or variant, and `dvc plots show` draws them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlaflow.methods import METHODS
from mlaflow.pipeline import params as P
from mlaflow.report import catalog, plots
from mlaflow.report.catalog import OUTPUTS, PLOT_TEMPLATE, SERIES

REPO = P.REPO_ROOT
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
ROLE = {"metrics": "metrics", "plot": "plots", "table": "outs", "figure": "outs", "page": "outs"}


def _declared(stages: dict) -> dict[tuple[str, str, str], dict]:
    """(stage, role, path) -> the entry's properties, for every output under reports/ of every stage."""
    found = {}
    for stage, body in stages.items():
        for role in ("outs", "metrics", "plots"):
            for entry in body.get(role, []):
                path, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                if path.startswith(f"{catalog.REPORTS}/"):
                    found[(stage, role, path)] = props or {}
    return found


def test_dvc_yaml_declares_exactly_the_catalog_each_in_its_stage_and_role():
    declared = _declared(DVC_YAML["stages"])
    expected = {(output.stage, ROLE[output.kind], output.path) for output in OUTPUTS}
    assert set(declared) == expected
    for (_stage, _role, path), props in declared.items():
        # the workflow writes them in place; DVC never deletes a committed report before a stage that fails
        assert props.get("cache") is False and props.get("persist") is True, path


def test_every_plot_is_drawn_by_the_series_template_from_the_catalogs_columns():
    declared = _declared(DVC_YAML["stages"])
    for output in (o for o in OUTPUTS if o.kind == "plot"):
        props = declared[(output.stage, "plots", output.path)]
        assert props["template"] == PLOT_TEMPLATE, output.path
        assert (props["x"], props["y"], props["title"]) == (output.x, output.y, output.title), output.path
    for output in (o for o in OUTPUTS if o.kind != "plot"):
        assert output.x is output.y is output.title is None, output.path
    template = json.loads((REPO / PLOT_TEMPLATE).read_text())
    assert template["encoding"]["color"]["field"] == SERIES
    assert template["encoding"]["x"]["field"] == "<DVC_METRIC_X>"
    assert template["encoding"]["y"]["field"] == "<DVC_METRIC_Y>"


def test_the_top_level_plots_are_the_figures_and_name_no_series():
    """A plot that named its columns (methods, variants) would silently leave out a new one: the data plots are
    the stages' (one y column each, a line per series), the top level lists the figures only."""
    figures = [output.path for output in OUTPUTS if output.kind == "figure"]
    assert DVC_YAML["plots"] == figures
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = {*METHODS, *params["fidelity"]["variants"]}
    for (_stage, role, path), props in _declared(DVC_YAML["stages"]).items():
        if role == "plots":
            assert isinstance(props["y"], str) and props["y"] not in names, path
            assert props["x"] not in names, path


def test_catalog_entries_are_complete():
    assert len({output.path for output in OUTPUTS}) == len(OUTPUTS)
    for output in OUTPUTS:
        assert output.kind in catalog.KINDS and output.stage in DVC_YAML["stages"], output
        assert (output.category is None) == (output.caption is None), output
        if output.caption:
            assert (REPO / "workflow" / "report" / output.caption).is_file(), output.caption
        if output.kind == "plot":
            assert output.x and output.y and output.title, output
    # every rule that writes catalogued files is one of the workflow's, and takes its outputs from the catalog
    rules = "".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    for rule in {output.rule for output in OUTPUTS}:
        assert f"rule {rule}:" in rules and f'report_outputs("{rule}")' in rules, rule


def test_series_data_is_long_in_the_wide_frames_column_order(tmp_path):
    wide = pd.DataFrame(
        {
            "missing_rate": [0.0, 0.3],
            "mla": [80.0, 70.5],
            "paper_mla": ["", 68.47],
            "late_fusion": [79.0, None],
        }
    )
    plots.write_series(wide, catalog.ACCURACY_CSV, tmp_path)
    lines = (tmp_path / "plots" / "accuracy_vs_missing_rate.csv").read_text().splitlines()
    assert lines == [
        "missing_rate,series,accuracy",
        "0.0,mla,80.0",
        "0.3,mla,70.5",
        "0.3,paper_mla,68.47",
        "0.0,late_fusion,79.0",
    ]
    # no series at all (a stage that did not run): the header only
    plots.write_series(pd.DataFrame(columns=["training_missing_rate"]), catalog.ISOLATION_CSV, tmp_path)
    assert (tmp_path / "plots" / "isolation.csv").read_text().splitlines() == [
        "training_missing_rate,series,accuracy"
    ]


def test_dvc_plots_show_draws_a_line_per_series_of_every_plot(tmp_path):
    """dvc.yaml's data plots, on files written as the report writes them (a DVC repository without git)."""
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip("dvc is not installed next to this Python")
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / PLOT_TEMPLATE).parent.mkdir(parents=True)
    shutil.copy(REPO / PLOT_TEMPLATE, tmp_path / PLOT_TEMPLATE)
    data = [o for o in OUTPUTS if o.kind == "plot"]
    for output in data:
        wide = pd.DataFrame({output.x: [0.0, 0.5], "a_method": [50.0, 40.0], "another_one": [45.0, 42.0]})
        plots.write_series(wide, output, tmp_path / catalog.REPORTS)
    run = [str(dvc), "plots", "show", "--json", *(o.path for o in data)]
    subprocess.run([str(dvc), "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    shown = json.loads(subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, text=True).stdout)
    assert not shown.get("errors"), shown["errors"]
    for output in data:
        (plot,) = shown["data"][output.path]
        spec = plot["content"]
        assert spec["encoding"]["color"]["field"] == SERIES and spec["title"]["text"] == output.title
        assert {row[SERIES] for row in spec["data"]["values"]} == {"a_method", "another_one"}
        assert {row[output.x] for row in spec["data"]["values"]} == {"0.0", "0.5"}
