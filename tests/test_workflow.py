"""The whole workflow on the tiny config (.test/tiny.yaml) through Snakemake's own `--configfile`: it runs end to
end in an empty directory, a second run does nothing, editing one method's module reruns only that method's
jobs and what depends on them, `--config key=value` reaches the jobs, and a wrong key fails before any job.

The workflow runs from a copy of the repository's code (`src/` imported from the copy), so that the code-edit
tests can edit a module without touching the repository; the outputs go to a separate empty directory (-d)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_workflow import TINY_CONFIG, copy_workflow

from mlaflow.pipeline import params as P

pytestmark = pytest.mark.integration

REPO = P.REPO_ROOT
BIN = Path(sys.executable).parent


def snakemake(
    code: Path, workdir: Path, *args: str, check: bool = True, configfile: str | Path = TINY_CONFIG
) -> subprocess.CompletedProcess:
    """snakemake on the tiny config (or `configfile`, relative to `code`), with the workflow and the mlaflow
    package of `code`, in `workdir`."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(code / "src")}
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(code / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(code / configfile),
        "--replace-workflow-config",
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} from the job stats table of a (dry) run."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if name != "total"}


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("code")
    copy_workflow(REPO, root)
    return root


@pytest.fixture(scope="module")
def workspace(code, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("work")
    snakemake(code, workdir, "all")
    return workdir


def test_the_tiny_config_runs_end_to_end_through_configfile(workspace):
    report = (workspace / "reports" / "report.md").read_text()
    assert "mla" in report and "late_fusion" in report and "not pretrained" in report
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert set(metrics["mla"]) == {"r00", "r50"} and set(metrics["late_fusion"]) == {"r00", "r50"}
    assert metrics["mla"]["r00"]["n_runs"] == 4  # 2 seeds x 2 folds
    runs = sorted((workspace / "data" / "runs").rglob("seed*_fold*.json"))
    assert len(runs) == 2 * 2 * 2 * 2 + 3 * 2 * 2  # main grid + 3 complete-modality methods at rate 0
    record = json.loads(runs[0].read_text())
    for key in ("accuracy", "unweighted_accuracy", "macro_f1", "weighted_f1", "per_modality_accuracy"):
        assert key in record["metrics"]
    classes = record["metrics"]["per_modality_predicted_classes"]  # 1: a constant predictor (Table 1 says so)
    assert set(classes) == {"audio", "visual", "text"} and all(1 <= n <= 4 for n in classes.values())
    assert {"seed", "fold", "missing_rate", "config_hash", "git_commit", "experiment"} <= set(record)
    assert (workspace / "reports" / "figures" / "accuracy_vs_missing_rate.png").stat().st_size > 1000
    # the face frames were cut from the embedded corpus's dialog videos (corpus.face_frames: from_video)
    faces = json.loads((workspace / "data" / "corpus" / "faces" / "summary.json").read_text())
    assert faces["n_utterances"] == 72 and faces["share_with_face"] >= 0.8
    frames_dirs = pd.read_csv(workspace / "data" / "manifest" / "manifest.csv")["frames_dir"]
    assert frames_dirs.str.startswith("data/corpus/faces/Session").all()
    assert "### Face crops" in report and f"{faces['with_face']} of the 72 utterances" in report


def test_every_method_is_tuned_on_validation_and_trains_with_its_chosen_values(workspace):
    """The tuning stage ran for every method of the comparison with the same budget; each run records the chosen
    values it trained with, and the report and the DVC metrics show them."""
    tuning = json.loads((workspace / "reports" / "tuning.json").read_text())
    methods = {"mla", "late_fusion", "concat", "qmf", "mla_hgm_off", "gcnet"}  # .test/tiny.yaml's comparison
    assert tuning["enabled"] is True and set(tuning) - {"enabled"} == methods
    for method in methods:
        chosen = json.loads((workspace / "data" / "tuning" / f"{method}.json").read_text())
        assert chosen["budget"] == 2 and len(chosen["trials"]) == 2 and chosen["folds"] == [1]
        assert chosen["trials"][0]["values"] == chosen["untuned"]["values"]  # trial 0: the config's values
        assert (workspace / "data" / "tuning" / method / "study.journal").stat().st_size > 0
        assert tuning[method]["budget"] == 2
    chosen = json.loads((workspace / "data" / "tuning" / "mla.json").read_text())
    for run in (workspace / "data" / "runs" / "mla").rglob("seed*_fold*.json"):
        record = json.loads(run.read_text())
        assert record["tuned"]["values"] == chosen["values"]
        assert record["optimizer"]["lr"] == chosen["values"]["train.lr"]
        assert record["method_params"]["alpha"] == chosen["values"]["method_params.mla.alpha"]
    # a fidelity variant keeps its own override of an option, with the tuned values for the rest
    variant = json.loads(
        next((workspace / "data" / "fidelity" / "released_code").rglob("seed*.json")).read_text()
    )
    assert variant["method_params"]["head_gradient_modification"] == "off"
    assert variant["optimizer"]["lr"] == chosen["values"]["train.lr"]
    report = (workspace / "reports" / "report.md").read_text()
    assert "## Tuning: every method with the same budget, on validation" in report
    assert report.count("Hyperparameters: each method's values chosen by the tuning stage") >= 3


def test_every_job_computes_from_its_own_config_file(workspace):
    config = json.loads((workspace / "data" / "runs" / "mla.config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["method"] == "mla"  # .test/tiny.yaml, not params.yaml
    assert set(config["method_params"]) == {"mla"}  # only its own method's options
    record = json.loads(
        next((workspace / "data" / "runs" / "mla" / "missing_0.50").glob("*.json")).read_text()
    )
    assert len(record["train_loss_curve"]) == 2
    from mlaflow.keys import config_hash

    assert record["config_hash"] == config_hash(config)


def test_the_complete_modality_tables(workspace):
    report = (workspace / "reports" / "report.md").read_text()
    assert "Table 1 analogue" in report and "| concat |" in report and "| qmf |" in report
    assert "Laziness claim on this corpus" in report
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert set(metrics["concat"]) == {"r00"} and set(metrics["qmf"]) == {"r00"}  # complete modalities only


def test_the_fidelity_section(workspace):
    # tiny fidelity grid: released_code MLA at 0.5, late fusion under cpm masks at 0.0 and 0.5
    # (at 0.0 the cpm masks remove nothing: those cells are the main grid's runs, not retrained)
    assert len(list((workspace / "data" / "fidelity" / "released_code" / "mla").rglob("*.json"))) == 4
    assert len(list((workspace / "data" / "fidelity" / "masks_cpm" / "late_fusion").rglob("*.json"))) == 4
    report = (workspace / "reports" / "report.md").read_text()
    assert "## Fidelity" in report and "released_code **(optimistic)**" in report
    assert "Optimism of test-set model selection" in report and "| late_fusion | cpm |" in report
    metrics = json.loads((workspace / "reports" / "fidelity.json").read_text())
    assert set(metrics["fidelity"]) == {
        "released_code",
        "per_batch_fusion",
        "fixed_fusion",
        "test_set_selection",
    }
    # test-set selection, measured on the main grid's MLA runs at 0.5: each run's best test epoch against the
    # epoch chosen on validation (the reported accuracy), mean over folds, then over seeds
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for run in (workspace / "data" / "runs" / "mla" / "missing_0.50").glob("seed*_fold*.json"):
        record = json.loads(run.read_text())
        best, chosen = max(record["test_accuracy_curve"]), record["metrics"]["accuracy"]
        by_seed.setdefault(record["seed"], []).append((best, chosen))
    assert sorted(by_seed) == [0, 1] and all(len(runs) == 2 for runs in by_seed.values())
    selection = metrics["fidelity"]["test_set_selection"]["r50"]
    best_mean = sum(sum(b for b, _ in runs) / len(runs) for runs in by_seed.values()) / len(by_seed)
    delta_mean = sum(sum(b - c for b, c in runs) / len(runs) for runs in by_seed.values()) / len(by_seed)
    assert selection["accuracy_mean"] == pytest.approx(best_mean, abs=2e-6)
    assert selection["delta_mean"] == pytest.approx(delta_mean, abs=2e-6)
    # every method that ran
    assert set(metrics["optimism"]) == {"mla", "late_fusion", "concat", "qmf", "mla_hgm_off", "gcnet"}
    assert set(metrics["by_protocol"]) == {"bernoulli", "cpm"}
    effects = (workspace / "reports" / "plots" / "fidelity_effects.csv").read_text().splitlines()
    assert effects[0] == "missing_rate,series,accuracy_difference" and len(effects) == 1 + 4  # 4 differences
    assert effects[1].startswith("0.5,released_code,")


def test_the_missing_suite_shift_and_isolation(workspace):
    # suite: qmf at 0.5 (its rate-0 runs are the complete-modality grid's); isolation: text masked at share 0.5
    assert len(list((workspace / "data" / "suite" / "qmf").rglob("*.json"))) == 4
    assert (
        len(list((workspace / "data" / "suite" / "gcnet").rglob("*.json"))) == 4
    )  # its dialogs: the manifest's
    for method in ("mla", "qmf"):
        runs = sorted((workspace / "data" / "isolation" / "isolate_text" / method).rglob("*.json"))
        assert len(runs) == 4
        record = json.loads(runs[0].read_text())
        assert record["experiment"] == "isolate_text" and record["experiment_kind"] == "isolation"
        assert record["masks"] == {"protocol": "single_modality", "modality": "text", "training_only": True}
    main_run = json.loads(
        next((workspace / "data" / "runs" / "mla" / "missing_0.50").glob("*.json")).read_text()
    )
    assert set(main_run["test_time_shift"]) == {"0.00", "0.50"}
    # the diagonal
    assert main_run["test_time_shift"]["0.50"] == pytest.approx(main_run["metrics"]["accuracy"])
    report = (workspace / "reports" / "report.md").read_text()
    assert "## Missing-modality suite (Table 2 analogue)" in report and "| qmf (paper) |" in report
    assert "### Test-time shift" in report and "## Isolation of modalities" in report
    metrics = json.loads((workspace / "reports" / "missing_suite.json").read_text())
    assert set(metrics) == {"config_hash", "mla", "late_fusion", "qmf", "gcnet"}
    assert set(metrics["qmf"]) == {"r50"} and set(metrics["gcnet"]) == {"r50"}
    assert metrics["qmf"]["r50"]["n_runs"] == 4
    shift = (workspace / "reports" / "plots" / "test_time_shift.csv").read_text().splitlines()
    assert shift[0] == "method,train_rate,test_rate,accuracy"
    rows = [line.split(",") for line in shift[1:]]
    shown = {row[0] for row in rows}  # MLA and the two strongest others (a suite method trained at 0.5 only)
    assert len(shown) == 3 and "mla" in shown
    for method in shown:  # each training rate it ran at, tested at both rates
        own = [row for row in rows if row[0] == method]
        assert len(own) == 2 * len({row[1] for row in own})
    isolation = (workspace / "reports" / "plots" / "isolation.csv").read_text().splitlines()
    assert isolation[0] == "training_missing_rate,series,accuracy"
    assert len(isolation) == 1 + 4 * 2  # (mla, qmf) x (audio, visual), shares 0.0 and 0.5
    assert isolation[1].startswith("0.0,mla_audio_without_text,")
    assert (workspace / "reports" / "figures" / "isolation.png").stat().st_size > 1000


def test_the_snakemake_html_report_shows_every_figure_and_table_in_a_browser(code, workspace):
    """`snakemake --report` on the finished tiny run, opened in headless chromium: it lists exactly the
    catalogued results, each with its caption, and each one opens and loads (a decoded image, a table with rows,
    the report page with its tables and embedded figures). The screenshot is kept as a CI artefact."""
    from browser import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mlaflow.report.catalog import REPORT_ITEMS

    html = workspace / "reports" / "report.html"
    snakemake(code, workspace, "--report", str(html))
    artefacts = Path(os.environ.get("MLAFLOW_ARTIFACTS", REPO / "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    with headless_chromium() as browser:
        browser.get(html.as_uri())
        wait = WebDriverWait(browser, 20)
        listed = wait.until(
            lambda b: b.execute_script("return typeof results === 'undefined' ? null : results")
        )
        assert set(listed) == set(REPORT_ITEMS)
        for path, (category, _caption) in REPORT_ITEMS.items():
            assert listed[path]["caption"].strip(), f"{path}: no caption"
            browser.get(html.as_uri())
            wait.until(lambda b, c=category: b.find_elements(By.XPATH, f"//*[normalize-space(text())='{c}']"))
            browser.find_element(By.XPATH, f"//*[normalize-space(text())='{category}']").click()
            eye = f"//td[normalize-space(text())='{path}']/..//a[@iconname='eye']"
            wait.until(lambda b, e=eye: b.find_elements(By.XPATH, e))[0].click()
            if path.endswith(".png"):
                image = wait.until(
                    lambda b: [
                        i
                        for i in b.find_elements(By.TAG_NAME, "img")
                        if i.get_attribute("src").startswith("data:image/png")
                    ]
                )[0]
                wait.until(lambda b, i=image: b.execute_script(loaded, i)), path
            elif path.endswith((".csv", ".json")):
                assert wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "table td")), path
            else:
                browser.switch_to.frame(wait.until(lambda b: b.find_elements(By.TAG_NAME, "iframe"))[0])
                assert len(browser.find_elements(By.TAG_NAME, "table")) >= 3, path
                figures = browser.find_elements(By.TAG_NAME, "img")
                assert figures and all(browser.execute_script(loaded, i) for i in figures), path
                browser.switch_to.default_content()
                browser.save_screenshot(str(artefacts / "snakemake_report.png"))
    assert (artefacts / "snakemake_report.png").stat().st_size > 10_000


def test_a_second_run_does_nothing(code, workspace):
    assert "Nothing to be done" in snakemake(code, workspace, "-n", "all").stdout


@pytest.mark.parametrize(
    "how",
    [
        ["--config", "runtime={device: cpu, batch_runs: false, tuning_storage: 'sqlite:///elsewhere.db'}"],
        ["--set-threads", "train=2", "tune=3", "extract=4"],
        ["--set-resources", "train:gpu=1", "tune:gpu=1", "extract:gpu=1"],
        ["--profile", "{code}/profiles/gpu-node"],
    ],
)
def test_a_runtime_setting_reruns_no_job(code, workspace, how):
    """How and where jobs run (params.yaml `runtime`, threads, GPUs, a profile) is no job's config: nothing to do."""
    out = snakemake(code, workspace, "-n", "all", *(arg.replace("{code}", str(code)) for arg in how)).stdout
    assert "Nothing to be done" in out, out[-3000:]


def test_regrouping_the_training_jobs_retrains_nothing(code, workspace):
    """runtime.job_group: the same runs, regrouped: each finds its runs up to date. The indexes take the training
    jobs' outputs (folders or run files) as their inputs, so they, the summary and the report run again."""
    out = snakemake(code, workspace, "-n", "all", "--config", "runtime={job_group: run}").stdout
    assert job_counts(out) == {"index": 4, "summary": 1, "build_report": 1, "all": 1}


def test_more_tuning_workers_add_their_jobs_and_rerun_nothing_else(code, workspace):
    out = snakemake(code, workspace, "-n", "all", "--config", "runtime={tuning_workers: 2}").stdout
    # worker 1 of each of the 6 methods' studies, which finds the study done; nothing downstream
    assert job_counts(out) == {"all": 1, "tune": 6}


def test_a_science_key_reruns_exactly_the_jobs_that_read_it(code, workspace):
    # an option of an encoder the config does not use (fbank's, under wav2vec2), of a method it does not train
    out = snakemake(
        code,
        workspace,
        "-n",
        "all",
        "--config",
        "features={audio: {n_mels: 64}}",
        "method_params={tate: {heads: 2}}",
    ).stdout
    assert "Nothing to be done" in out
    # a QMF option: QMF's tuning study and its training jobs (complete grid, suite, isolation), then what reads them
    counts = job_counts(
        snakemake(
            code, workspace, "-n", "all", "--config", "method_params={qmf: {confidence_scale: 0.2}}"
        ).stdout
    )
    assert counts["tune"] == 1 and counts["tune_select"] == 1 and counts["train"] == 3
    assert "extract" not in counts and "masks" not in counts
    # a text encoder option: the text features, and everything computed from them
    counts = job_counts(
        snakemake(code, workspace, "-n", "all", "--config", "features={text: {max_length: 16}}").stdout
    )
    # (the embedded BERT is built for its max_length: its position embeddings)
    assert counts["extract"] == 1 and counts["build_encoder"] == 1 and counts["tune"] == 6


def _edited(path: Path, addition: str):
    """Context: `path` with `addition` appended, restored afterwards."""

    class Edit:
        def __enter__(self):
            self.original = path.read_text()
            path.write_text(self.original + addition)

        def __exit__(self, *exc):
            path.write_text(self.original)

    return Edit()


def test_editing_one_methods_module_reruns_only_its_jobs_and_the_report(code, workspace):
    # qmf trains in the complete-modality grid (0.0), the suite (0.5) and the isolation analysis (0.5); it is
    # tuned again (its study's one worker and the choice), then the tuning metrics; and it trains in the Table 1
    # and Table 4 analogues' workflows, which run again (and rerun there what qmf.py computes)
    with _edited(code / "src" / "mlaflow" / "methods" / "qmf.py", "\n# an edit\n"):
        counts = job_counts(snakemake(code, workspace, "-n", "all").stdout)
    assert counts == {
        "table1_corpus": 3,
        "tune": 1,
        "tune_select": 1,
        "tuning_summary": 1,
        "train": 3,
        "index": 3,
        "summary": 1,
        "build_report": 1,
        "all": 1,
    }
    # tate is not in this grid
    with _edited(code / "src" / "mlaflow" / "methods" / "tate.py", "\n# an edit\n"):
        assert "Nothing to be done" in snakemake(code, workspace, "-n", "all").stdout
    assert "Nothing to be done" in snakemake(code, workspace, "-n", "all").stdout  # restored: checksums match


def test_editing_the_report_code_reruns_only_the_report(code, workspace):
    with _edited(code / "src" / "mlaflow" / "report" / "build.py", "\n# an edit\n"):
        assert job_counts(snakemake(code, workspace, "-n", "all").stdout) == {
            "table1_corpus": 3,  # the Table 1 and Table 4 analogues' own reports
            "summary": 1,
            "build_report": 1,
            "all": 1,
        }
    with _edited(code / "src" / "mlaflow" / "cli.py", "\n# a help string\n"):  # not a code input
        assert "Nothing to be done" in snakemake(code, workspace, "-n", "all").stdout


def test_config_on_the_command_line_reaches_the_jobs(code, workspace, tmp_path):
    out = snakemake(code, workspace, "-n", "all", "--config", "train={epochs: 3}").stdout
    counts = job_counts(out)
    assert counts["train"] == 11 and "extract" not in counts and "masks" not in counts
    # what a job computes from is its config file: written from the config given on the command line
    snakemake(code, tmp_path, "data/runs/mla.config.json", "--config", "train={epochs: 3}")
    assert json.loads((tmp_path / "data" / "runs" / "mla.config.json").read_text())["train"]["epochs"] == 3


def test_a_wrong_key_fails_before_any_job(code, tmp_path):
    proc = snakemake(code, tmp_path, "-n", "--config", "train={epochz: 3}", check=False)
    assert proc.returncode != 0
    assert "train.epochz" in proc.stdout + proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "job_group, jobs, runs", [("method", 11, 8), ("cell", 13, 4), ("seed", 26, 2), ("run", 52, 1)]
)
def test_job_group_decides_how_many_runs_one_training_job_covers(code, tmp_path, job_group, jobs, runs):
    """runtime.job_group: the tiny grid's 13 cells (2 seeds x 2 folds each) in 11 jobs of a method each (mla and
    late fusion at 2 rates), 13 of a cell, 26 of a seed, 52 of a run. A job trains the runs it writes."""
    grouping = ["--config", f"runtime={{job_group: {job_group}}}"]
    assert job_counts(snakemake(code, tmp_path, "-n", "all", *grouping).stdout)["train"] == jobs
    target = "data/runs/mla" if job_group == "method" else "data/runs/mla/missing_0.50/seed1_fold2.json"
    shell = snakemake(code, tmp_path, "-n", "-p", target, *grouping).stdout
    command = next(line for line in shell.splitlines() if "mlaflow train" in line)
    written = re.findall(r"data/runs/mla/missing_\d\.\d\d/seed\d_fold\d\.json", command.split("--out")[1])
    assert len(written) == runs and "data/runs/mla/missing_0.50/seed1_fold2.json" in written


def scheduled(output: str, rule: str) -> list[str]:
    """The output lines of every job of `rule` in a dry run's listing."""
    return re.findall(rf"^rule {rule}:\n(?:    .*\n)*?    output: (.*)$", output, re.M)


@pytest.fixture
def workspace_copy(workspace, request) -> Path:
    """A copy of the finished tiny workspace (timestamps and Snakemake's metadata kept) to change freely. A
    sibling of it, so that the code inputs' paths (relative to the working directory) stay the same."""
    import shutil

    copy = workspace.parent / f"{workspace.name}-{request.node.name[:40]}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(workspace, copy, symlinks=True)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def test_adding_a_missing_rate_schedules_exactly_the_runs_it_invalidates(code, workspace_copy):
    rates = ["--config", "masks={missing_rates: [0.0, 0.3, 0.5]}"]
    out = snakemake(code, workspace_copy, "-n", "all", *rates).stdout
    trained = scheduled(out, "train")
    roots = sorted({path.split("/missing_")[0] for job in trained for path in job.split(", ")})
    # main and complete and the suite are tested at every rate (their shift records gain 0.3); the new cells;
    # isolation and the fidelity variant at 0.5 do not depend on the rates and are not retrained
    assert roots == [
        "data/fidelity/masks_cpm/late_fusion",
        "data/runs/concat",
        "data/runs/late_fusion",
        "data/runs/mla",
        "data/runs/mla_hgm_off",
        "data/runs/qmf",
        "data/suite/gcnet",
        "data/suite/qmf",
    ]
    assert len(trained) == 8  # one job of each method (runtime.job_group: method) that depends on the rates
    snakemake(code, workspace_copy, "all", *rates)  # and it runs to the report (no stale run)
    metrics = json.loads((workspace_copy / "reports" / "metrics.json").read_text())
    assert set(metrics["mla"]) == {"r00", "r30", "r50"}


def test_a_missing_intermediate_file_is_made_again(code, workspace_copy):
    (workspace_copy / "data" / "splits" / "masks" / "bernoulli" / "missing_0.50.h5").unlink()
    (workspace_copy / "data" / "runs" / "mla.config.json").unlink()
    counts = job_counts(snakemake(code, workspace_copy, "-n", "main_grid").stdout)
    assert counts["masks"] == 1 and counts["job_config"] >= 1
    (workspace_copy / "data" / "manifest" / "manifest.csv").unlink()
    assert "manifest" in job_counts(snakemake(code, workspace_copy, "-n", "features").stdout)


def test_a_precomputed_store_that_does_not_exist_fails_at_parse_time(code, tmp_path):
    proc = snakemake(
        code, tmp_path, "-n", "--config", "features={audio: {precomputed: no/such.h5}}", check=False
    )
    assert proc.returncode != 0 and "features.audio.precomputed" in proc.stdout + proc.stderr


def other_config(
    code: Path, workdir: Path, name: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """snakemake with another config of .test/ (instead of the tiny one)."""
    return snakemake(code, workdir, *args, check=check, configfile=f".test/{name}.yaml")


def test_the_cremad_look_alike_runs_end_to_end_with_two_modalities_and_six_classes(code, tmp_path):
    other_config(code, tmp_path, "cremad", "all")
    assert (
        sorted(p.name for p in (tmp_path / "data" / "corpus" / "CREMA-D" / "AudioWAV").glob("*.wav"))[0]
        == "1001_IEO_ANG_XX.wav"
    )
    record = json.loads(
        next((tmp_path / "data" / "runs" / "mla" / "missing_0.50").glob("*.json")).read_text()
    )
    assert set(record["metrics"]["per_modality_accuracy"]) == {"audio", "visual"}
    assert (
        record["encoders"]["audio"]["encoder"] == "fbank"
        and record["encoders"]["visual"]["encoder"] == "manet"
    )
    config = json.loads((tmp_path / "data" / "runs" / "mla.config.json").read_text())
    assert (
        config["classes"] == ["neu", "hap", "sad", "fea", "dis", "ang"]
        and config["feature_dims"]["audio"] == 64
    )
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "Table 1 analogue" in report and "paper (CREMA-D): audio / video / multi" in report
    assert "| mla |" in report and "59.27 / 64.91 / 79.70" in report  # the paper's CREMA-D row of MLA
    assert "Table 2" in report and "(paper)" not in report.split("Table 2 analogue")[1].split("##")[0]
    assert "visual acc" in report and "text acc" not in report


# a folder name a shell would split and run: every path of the config reaches the jobs' commands quoted
HOSTILE_FOLDER = "own files; touch PWNED; #"


def test_your_own_features_run_end_to_end_with_free_names_ten_classes_and_their_split(code, tmp_path):
    """.test/features.yaml, with its stores and table in a folder whose name has spaces and shell characters, in
    a working directory whose name has a space: everything runs, nothing is executed from a path."""
    from tiny_workflow import write_feature_corpus

    workdir = tmp_path / "work dir"
    write_feature_corpus(workdir, folder=HOSTILE_FOLDER)
    config = (code / ".test" / "features.yaml").read_text()
    for name in ("labels.csv", "speech.h5", "face.h5", "words.h5"):
        config = config.replace(f"own/{name}", json.dumps(f"{HOSTILE_FOLDER}/{name}"))
    (tmp_path / "my features.yaml").write_text(config)
    snakemake(code, workdir, "all", configfile=tmp_path / "my features.yaml")
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()
    assert not (workdir / "data" / "corpus").exists() and not (workdir / "data" / "features").exists()
    folds = (workdir / "data" / "splits" / "folds.csv").read_text().splitlines()
    assert folds[0] == "utterance_id,fold1"
    record = json.loads(next((workdir / "data" / "runs" / "mla" / "missing_0.00").glob("*.json")).read_text())
    assert set(record["metrics"]["per_modality_accuracy"]) == {"speech", "face", "words"}
    assert record["n_test"] == 60 and record["n_val"] == 30
    assert record["metrics"]["accuracy"] > 0.3  # ten classes, chance 0.1: the words carry the label
    report = (workdir / "reports" / "report.md").read_text()
    assert "speech acc" in report and "words acc" in report and "not one of its datasets" in report
    assert "(paper)" not in report


def test_a_features_store_that_does_not_match_the_table_fails_naming_it(code, tmp_path):
    import h5py
    from tiny_workflow import write_feature_corpus

    write_feature_corpus(tmp_path)
    with h5py.File(tmp_path / "own" / "face.h5", "a") as f:
        f.attrs["modality"] = "words"
    proc = other_config(code, tmp_path, "features", "data/runs/index.json", check=False)
    assert proc.returncode != 0
    # the first job that reads the stores fails (a tuning trial, before any training)
    log = "\n".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert "face.h5" in log and "holds `words` features, but `face` features were expected" in log


def test_sharded_extraction_gives_the_stores_of_an_unsharded_one(code, tmp_path):
    """runtime.extraction_shards 2: two `extract` jobs per modality and a merge, the same stores bit for bit;
    changing the setting re-extracts (and nothing before extraction), the shard stores go once merged."""
    import h5py

    from mlaflow.features.store import MODALITIES

    def content(path):
        with h5py.File(path, "r") as handle:
            return (
                {name: handle[name][()].tolist() for name in handle},
                {name: str(value) for name, value in handle.attrs.items()},
            )

    snakemake(code, tmp_path, "features")
    unsharded = {m: content(tmp_path / "data" / "features" / f"{m}.h5") for m in MODALITIES}
    proc = snakemake(code, tmp_path, "features", "--config", "runtime={extraction_shards: 2}")
    out = proc.stdout + proc.stderr  # a run (not a dry run) logs to stderr
    assert job_counts(out) == {"extract": 6, "merge_features": 3, "features": 1}
    assert "--shard 2 --shards 2" in out
    for modality in MODALITIES:
        assert content(tmp_path / "data" / "features" / f"{modality}.h5") == unsharded[modality], modality
    assert not list((tmp_path / "data" / "features").rglob("*of2*.h5"))  # temporary: removed once merged
    again = snakemake(code, tmp_path, "-n", "features", "--config", "runtime={extraction_shards: 2}").stdout
    assert "Nothing to be done" in again
    back = snakemake(code, tmp_path, "-n", "features").stdout
    assert job_counts(back) == {"extract": 3, "features": 1}
