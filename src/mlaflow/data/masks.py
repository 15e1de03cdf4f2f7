"""Missing-modality masks (paper section 4.2): each modality of each sample is missing with probability eta.

A mask is a bool array `present[N, M]` over the manifest's utterances and the corpus's modalities, in their
order. The same eta applies to train, validation and test; every cell is an
independent Bernoulli draw, so the three splits' masks are independent draws as well. One mask is drawn per
(missing rate, seed) and is fixed for the run (never redrawn per epoch).

Samples that lose every modality (at eta = 0.7 that is 0.7**3 = 34% of them): with `all_missing: prior` they
stay as drawn (the paper's words): training ignores them, and at evaluation they count, predicted as the
training split's majority class, so no method can look better by dropping them. With `all_missing: redraw`
their rows are drawn again until one modality is present (then the real missing fraction is below eta;
the artefact records it).

Protocol `cpm` is the one all public code of this line of work used (CPM-Net's `get_sn`, copied into MLA's
repository), reimplemented here: every sample keeps one modality chosen uniformly, further modalities are
drawn so that the overall fraction of missing cells is eta within 0.005 (redrawing the whole mask until it
is); for eta >= 1 - 1/M every sample keeps exactly one modality (at M = 3, eta = 0.7 gives 0.667 missing).
As in `get_sn`, the Bernoulli probabilities are quantised to whole percent.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mlaflow.data.manifest import VISUAL, no_face
from mlaflow.errors import InputError
from mlaflow.io import atomic_path


def bernoulli_mask(
    n_samples: int, missing_rate: float, seed: int, all_missing: str = "prior", n_modalities: int = 3
) -> np.ndarray:
    """Return present[N, M]: True where the modality is observed."""
    rng = np.random.default_rng([seed, round(missing_rate * 1000)])
    present = rng.random((n_samples, n_modalities)) >= missing_rate
    if all_missing == "redraw":
        if missing_rate >= 1.0:
            raise ValueError("cannot redraw masks with missing_rate 1.0")
        while True:
            empty = ~present.any(axis=1)
            if not empty.any():
                break
            present[empty] = rng.random((int(empty.sum()), n_modalities)) >= missing_rate
    elif all_missing != "prior":
        raise ValueError(f"unknown all_missing policy {all_missing!r}")
    return present


def cpm_mask(
    n_samples: int, missing_rate: float, seed: int, n_modalities: int = 3, tolerance: float = 0.005
) -> np.ndarray:
    """CPM-Net's protocol: present[N, M] with at least one modality per sample and a missing fraction of
    `missing_rate` within `tolerance` (or exactly one modality per sample when missing_rate >= 1 - 1/M)."""
    rng = np.random.default_rng([seed, round(missing_rate * 1000), 1])
    present_rate = 1.0 - missing_rate
    n_cells = n_samples * n_modalities
    keep_one = np.zeros((n_samples, n_modalities), dtype=bool)
    if present_rate <= 1.0 / n_modalities:
        keep_one[np.arange(n_samples), rng.integers(0, n_modalities, n_samples)] = True
        return keep_one
    if present_rate >= 1.0:
        return np.ones((n_samples, n_modalities), dtype=bool)
    while True:
        keep_one[:] = False
        keep_one[np.arange(n_samples), rng.integers(0, n_modalities, n_samples)] = True
        extra = n_cells * present_rate - n_samples  # cells to add on top of the guaranteed ones
        draw = rng.integers(0, 100, (n_samples, n_modalities)) < int(extra / n_cells * 100)
        overlap = np.sum(draw & keep_one)  # draws that land on a kept cell add nothing: scale the rate up
        extra_corrected = extra / (1 - overlap / extra)
        draw = rng.integers(0, 100, (n_samples, n_modalities)) < int(extra_corrected / n_cells * 100)
        present = draw | keep_one
        if abs(present.mean() - present_rate) < tolerance:
            return present


def isolation_mask(
    n_samples: int, modality: int, missing_rate: float, seed: int, n_modalities: int = 3
) -> np.ndarray:
    """Isolation analysis (Figure 2): only modality number `modality` is masked, each sample independently with
    probability `missing_rate`; every other modality is present. The trainer applies it to the training split
    only (`training_only`), so validation and test stay complete."""
    rng = np.random.default_rng([seed, round(missing_rate * 1000), 2, modality])
    present = np.ones((n_samples, n_modalities), dtype=bool)
    present[:, modality] = rng.random(n_samples) >= missing_rate
    return present


def training_only(
    present: np.ndarray, split: dict[str, np.ndarray], recorded_: np.ndarray | None = None
) -> np.ndarray:
    """The mask with every recorded modality present outside the training split (isolation masks: train-time
    only); `recorded_` (default: all) from `recorded`."""
    out = np.ones_like(present) if recorded_ is None else recorded_.copy()
    out[split["train"]] = present[split["train"]]
    return out


def draw_mask(
    spec: dict,
    modalities: list[str],
    n_samples: int,
    missing_rate: float,
    seed: int,
    all_missing: str = "prior",
) -> np.ndarray:
    """The mask of one (missing rate, seed) under a mask specification (`mlaflow.pipeline.experiments.MaskSpec.as_dict`:
    protocol bernoulli | cpm | single_modality, and the modality of the latter)."""
    M = len(modalities)
    if spec["protocol"] == "bernoulli":
        return bernoulli_mask(n_samples, missing_rate, seed, all_missing, M)
    if spec["protocol"] == "cpm":
        return cpm_mask(n_samples, missing_rate, seed, M)  # never removes every modality: all_missing is moot
    if spec["protocol"] == "single_modality":
        return isolation_mask(n_samples, modalities.index(spec["modality"]), missing_rate, seed, M)
    raise ValueError(f"unknown mask protocol {spec['protocol']!r}")


def mask_stats(present: np.ndarray, modalities: list[str]) -> dict:
    """Real missing fraction overall and per modality, and the share of samples with k modalities present."""
    n_present = present.sum(axis=1)
    return {
        "missing_fraction": float(1.0 - present.mean()),
        "missing_fraction_per_modality": {
            m: float(1.0 - present[:, i].mean()) for i, m in enumerate(modalities)
        },
        "share_with_k_present": {str(k): float((n_present == k).mean()) for k in range(present.shape[1] + 1)},
    }


def spec_label(spec: dict) -> str:
    """A mask specification in words: 'bernoulli', 'cpm', 'single_modality(text)'."""
    return (
        f"{spec['protocol']}({spec['modality']})"
        if spec["protocol"] == "single_modality"
        else spec["protocol"]
    )


def write_masks(
    path: str | Path,
    utterance_ids: list[str],
    masks_by_seed: dict[int, np.ndarray],
    missing_rate: float,
    spec: dict,
    all_missing: str,
    modalities: list[str],
) -> None:
    """One HDF5 file per missing rate: dataset `seed_<s>` bool [N, M] per seed, stats as attributes."""
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=np.array(utterance_ids, dtype=object), dtype=h5py.string_dtype())
        f.attrs.update(
            missing_rate=missing_rate,
            protocol=spec_label(spec),
            all_missing=all_missing,
            modalities=list(modalities),
        )
        for seed, present in masks_by_seed.items():
            ds = f.create_dataset(f"seed_{seed}", data=present)
            for key, value in _flatten(mask_stats(present, modalities)).items():
                ds.attrs[key] = value


def recorded(manifest: pd.DataFrame, modalities: list[str]) -> np.ndarray:
    """[N, M]: False where a sample's modality was never recorded, whatever the missing rate: the visual modality
    of an utterance without a detected face (mlaflow.data.manifest.no_face)."""
    out = np.ones((len(manifest), len(modalities)), dtype=bool)
    if VISUAL in modalities:
        lacking = [column for column in ("frames_dir", "n_frames") if column not in manifest.columns]
        if (
            lacking
        ):  # every adapter writes them (mlaflow.data.manifest.MANIFEST_COLUMNS); a hand-made one may not
            raise InputError(
                None,
                f"the manifest has no column(s) {lacking}, which say whether a visual input was recorded",
                "rebuild the manifest with `mlaflow manifest`, or add the columns (empty frames_dir: recorded)",
            )
        out[:, modalities.index(VISUAL)] = [not no_face(row) for row in manifest.to_dict("records")]
    return out


def within_recorded(present: np.ndarray, recorded_: np.ndarray, keep_one: bool, seed: int) -> np.ndarray:
    """A drawn mask with the never-recorded cells missing. With `keep_one` (a protocol where every sample keeps a
    modality), a sample that this leaves with none keeps one of its recorded modalities instead, chosen uniformly
    (seeded): the drawn count of present modalities is kept where the corpus allows it."""
    out = present & recorded_
    emptied = np.flatnonzero(present.any(axis=1) & ~out.any(axis=1) & recorded_.any(axis=1))
    if keep_one and len(emptied):
        rng = np.random.default_rng([seed, 2])
        for row in emptied:
            out[row, rng.choice(np.flatnonzero(recorded_[row]))] = True
    return out


def make_masks(config: dict, manifest_path: str | Path, missing_rate: float, out: str | Path) -> None:
    """The masks job (`mlaflow masks`): one mask per seed of the config at `missing_rate`, into `out`. A modality
    the corpus never recorded for a sample (`recorded`) is missing in every mask, after the draw."""
    import logging

    manifest = pd.read_csv(
        manifest_path, dtype={"utterance_id": str, "frames_dir": str}, keep_default_na=False
    )
    ids = manifest["utterance_id"].tolist()
    spec, modalities = config["masks"], config["modalities"]
    # only bernoulli masks can remove every modality of a sample (experiments.mask_job_config)
    all_missing = config["all_missing"] if spec["protocol"] == "bernoulli" else "not applicable"
    present_in_corpus = recorded(manifest, modalities)
    if not present_in_corpus.all():
        logging.getLogger(__name__).info(
            "never recorded, missing in every mask: %s",
            {m: int((~present_in_corpus[:, i]).sum()) for i, m in enumerate(modalities)},
        )
    masks = {
        seed: within_recorded(
            draw_mask(spec, modalities, len(ids), missing_rate, seed, all_missing),
            present_in_corpus,
            keep_one=all_missing_forbidden_by(spec, all_missing) is not None,
            seed=seed,
        )
        for seed in config["seeds"]
    }
    for seed, present in masks.items():
        logging.getLogger(__name__).info(
            "missing_rate=%.2f seed=%d: %s", missing_rate, seed, mask_stats(present, modalities)
        )
    write_masks(out, ids, masks, missing_rate, spec, all_missing, modalities)


def open_mask(path: str | Path) -> h5py.File:
    """A mask file opened for reading; a missing or damaged one is an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(
            path, "mask file not found", "run `snakemake masks` (or dvc repro) to generate masks"
        )
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(
            path,
            f"cannot be read as a mask file ({err})",
            "delete it and run `dvc repro` again (it is redrawn, identically)",
        ) from err


def _read_seed(f: h5py.File, path: Path, seed: int, spec: dict | None):
    if spec is not None and f.attrs.get("protocol") != spec_label(spec):
        raise InputError(
            path,
            f"masks drawn under protocol {f.attrs.get('protocol')!r}, expected {spec_label(spec)!r}",
            "pass the mask file of the run's protocol (data/splits/masks/)",
        )
    modalities = [str(m) for m in f.attrs.get("modalities", [])]
    ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]]
    if f"seed_{seed}" not in f:
        raise InputError(path, f"no mask for seed {seed}", "regenerate masks for the seeds in params.yaml")
    return modalities, ids, f[f"seed_{seed}"][()]


def read_mask(
    path: str | Path,
    seed: int,
    utterance_ids: list[str],
    spec: dict | None = None,
    forbid_all_missing: str | None = None,
    modalities: list[str] | None = None,
) -> np.ndarray:
    """present [N, M] of one seed, checked against the manifest's ids (and the expected specification, if
    given): shape [N, M], boolean, and, if `forbid_all_missing` names a reason, no sample without any
    modality."""
    path = Path(path)
    with open_mask(path) as f:
        try:
            file_modalities, ids, mask = _read_seed(f, path, seed, spec)
        except OSError as err:  # the header opened, a dataset does not read: a damaged file
            raise InputError(
                path,
                f"cannot be read whole ({err})",
                "delete it and run `dvc repro` again (it is redrawn, identically)",
            ) from err
    if ids != list(utterance_ids):
        raise InputError(
            path,
            "mask ids do not match the manifest's utterances",
            "regenerate masks after the manifest changed (snakemake --forcerun masks)",
        )
    if modalities is not None and file_modalities != list(modalities):
        raise InputError(
            path,
            f"its columns are the modalities {file_modalities}, the run's are {list(modalities)}",
            "regenerate masks for this corpus (snakemake --forcerun masks)",
        )
    fix = "regenerate it with `snakemake --forcerun masks` (masks are drawn from params.yaml `masks`)"
    if mask.ndim != 2 or mask.shape != (len(utterance_ids), len(file_modalities)):
        raise InputError(
            path,
            f"seed_{seed} has shape {mask.shape}, expected "
            f"{(len(utterance_ids), len(file_modalities))} (utterances x {file_modalities})",
            fix,
        )
    if mask.dtype != np.bool_:
        raise InputError(path, f"seed_{seed} has dtype {mask.dtype}, expected bool", fix)
    if forbid_all_missing:
        empty = np.flatnonzero(~mask.any(axis=1))
        if len(empty):
            raise InputError(
                path,
                f"seed_{seed} removes every modality of {len(empty)} sample(s) (first: "
                f"{utterance_ids[empty[0]]!r}), which {forbid_all_missing} forbids",
                f"{fix}; with the bernoulli protocol, masks.all_missing: prior keeps such samples "
                "(predicted as the training prior)",
            )
    return mask


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def all_missing_forbidden_by(spec: dict, all_missing: str) -> str | None:
    """Why a mask of this specification may not remove every modality of a sample (None: it may)."""
    if spec["protocol"] == "bernoulli":
        return None if all_missing == "prior" else f"masks.all_missing: {all_missing}"
    return f"mask protocol {spec_label(spec)!r} (every sample keeps a modality)"


def mask_missing_rate(path: str | Path) -> float:
    """The missing rate a mask file was drawn at (its `missing_rate` attribute)."""
    with open_mask(path) as f:
        return float(f.attrs["missing_rate"])
