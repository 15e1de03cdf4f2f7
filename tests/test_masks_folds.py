import numpy as np
import pandas as pd
import pytest

from mlaflow.data.folds import fold_indices, make_folds
from mlaflow.data.masks import bernoulli_mask, cpm_mask, draw_mask, mask_stats, read_mask, write_masks
from mlaflow.errors import InputError, ParamsError

BERNOULLI = {"protocol": "bernoulli", "modality": None, "training_only": False}
CLASSES = ["neu", "hap", "sad", "ang"]


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_bernoulli_mask_statistics_within_binomial_tolerance(rate):
    n = 20000
    present = bernoulli_mask(n, rate, seed=3)
    sd = np.sqrt(rate * (1 - rate) / n)
    for m in range(3):
        assert abs((1 - present[:, m].mean()) - rate) < 4 * sd
    # independence across modalities: the share of samples with nothing left is rate**3
    sd3 = np.sqrt(rate**3 * (1 - rate**3) / n)
    assert abs((~present.any(1)).mean() - rate**3) < 4 * sd3 + 1e-4


def test_rate_zero_masks_nothing_and_masks_are_seeded():
    assert bernoulli_mask(100, 0.0, seed=0).all()
    assert np.array_equal(bernoulli_mask(500, 0.4, 1), bernoulli_mask(500, 0.4, 1))
    assert not np.array_equal(bernoulli_mask(500, 0.4, 1), bernoulli_mask(500, 0.4, 2))


def test_all_missing_prior_keeps_empty_samples_and_redraw_removes_them():
    kept = bernoulli_mask(5000, 0.7, seed=0, all_missing="prior")
    assert (~kept.any(1)).mean() > 0.3  # 0.7**3 = 0.343: kept as drawn
    redrawn = bernoulli_mask(5000, 0.7, seed=0, all_missing="redraw")
    assert redrawn.any(1).all()
    stats = mask_stats(redrawn, ["audio", "visual", "text"])
    assert stats["share_with_k_present"]["0"] == 0.0
    assert stats["missing_fraction"] < 0.7  # the real fraction is recorded, and it is lower


def test_mask_file_round_trip_and_id_check(tmp_path):
    ids = [f"u{i}" for i in range(50)]
    masks = {0: bernoulli_mask(50, 0.3, 0), 1: bernoulli_mask(50, 0.3, 1)}
    path = tmp_path / "missing_0.30.h5"
    write_masks(path, ids, masks, 0.3, BERNOULLI, "prior", ["audio", "visual", "text"])
    assert np.array_equal(read_mask(path, 1, ids), masks[1])
    with pytest.raises(InputError, match="missing_0.30.h5"):
        read_mask(path, 0, ids[::-1])
    with pytest.raises(InputError, match="seed 7"):
        read_mask(path, 7, ids)


def _manifest(n_per_session=40):
    rows = []
    for s in range(1, 6):
        for i in range(n_per_session):
            rows.append({"utterance_id": f"Ses0{s}_{i:03d}", "session": s, "label_index": i % 4})
    return pd.DataFrame(rows)


def test_folds_leave_one_session_out_with_stratified_validation():
    manifest = _manifest()
    table = make_folds(manifest, [1, 3], validation_fraction=0.1, seed=0, classes=CLASSES)
    for fold in (1, 3):
        idx = fold_indices(table, fold)
        assert set(manifest["session"].iloc[idx["test"]]) == {fold}
        assert fold not in set(manifest["session"].iloc[idx["train"]])
        assert fold not in set(manifest["session"].iloc[idx["val"]])
        assert len(set(idx["train"]) & set(idx["val"])) == 0
        assert len(idx["val"]) == 16  # 10% of each class (40 per class in the 4 training sessions)
        assert set(np.bincount(manifest["label_index"].iloc[idx["val"]])) == {4}
    again = make_folds(manifest, [1, 3], 0.1, seed=0, classes=CLASSES)
    assert table.equals(again)


def test_fold_for_missing_session_names_the_key():
    with pytest.raises(ParamsError, match="splits.folds"):
        make_folds(_manifest()[lambda d: d.session < 5], [5], 0.1, 0, CLASSES)


def test_a_fold_whose_training_sessions_lack_a_class_names_the_fold_the_class_and_the_manifest():
    manifest = _manifest()
    manifest = manifest[(manifest["label_index"] != 3) | (manifest["session"] == 1)]  # ang: session 1 only
    make_folds(manifest, [3], 0.1, 0, CLASSES)  # fold 3 trains on session 1, and so on ang
    with pytest.raises(ParamsError) as err:
        make_folds(manifest, [1, 3], 0.1, 0, CLASSES, manifest_path="data/manifest/manifest.csv")
    message = str(err.value)
    assert "`splits.folds`" in message and "data/manifest/manifest.csv" in message
    assert "fold 1" in message and "['ang']" in message and "fold 3" not in message
    assert "session 1" in message and "corpus.label_setup" in message


def test_validation_drawing_every_training_row_of_a_class_names_the_validation_fraction():
    manifest = _manifest()
    # ang: all of session 1 (tested by fold 1) and one row of session 2, which validation (60%) draws
    keep = (
        (manifest["label_index"] != 3)
        | (manifest["session"] == 1)
        | (manifest["utterance_id"] == "Ses02_003")
    )
    manifest = manifest[keep]
    with pytest.raises(ParamsError, match=r"fold 1.*\['ang'\].*validation.*splits\.validation_fraction"):
        make_folds(manifest, [1], 0.6, 0, CLASSES)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.6])
def test_cpm_masks_keep_a_modality_and_hit_the_target_fraction(rate):
    present = cpm_mask(5531, rate, seed=0)
    assert present.any(axis=1).all()  # never every modality of a sample
    assert abs((1 - present.mean()) - rate) < 0.005  # the protocol's tolerance
    assert np.array_equal(present, cpm_mask(5531, rate, seed=0))
    assert not np.array_equal(present, cpm_mask(5531, rate, seed=1))


def test_cpm_at_high_rates_keeps_exactly_one_modality_per_sample():
    present = cpm_mask(3000, 0.7, seed=0)
    assert (present.sum(axis=1) == 1).all()
    assert 1 - present.mean() == pytest.approx(2 / 3)  # the real fraction is 0.667, not 0.7
    assert np.bincount(present.argmax(1), minlength=3).min() > 900  # the kept modality is chosen uniformly


def test_draw_mask_dispatches_on_the_protocol():
    names = ["audio", "visual", "text"]
    assert np.array_equal(draw_mask(BERNOULLI, names, 100, 0.3, 2), bernoulli_mask(100, 0.3, 2))
    assert np.array_equal(
        draw_mask({**BERNOULLI, "protocol": "cpm"}, names, 100, 0.3, 2), cpm_mask(100, 0.3, 2)
    )
    with pytest.raises(ValueError):
        draw_mask({**BERNOULLI, "protocol": "other"}, names, 100, 0.3, 2)
