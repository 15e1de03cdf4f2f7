"""GCNet (mlaflow.methods.gcnet): the conversation graph, the stacked LSTM against torch's, stacked runs against
runs one at a time, the reconstruction loss of the reference, and a toy where the dialog context decides."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch
from method_toys import SGD, group, mask
from torch import nn

from mlaflow.errors import ParamsError
from mlaflow.methods.base import RunGroup
from mlaflow.methods.gcnet import GCNet, StackedLSTM
from mlaflow.methods.optim import StackedOptimizer
from mlaflow.train.data import Conversations
from mlaflow.train.loop import train_epoch

OPTIONS = {
    "hidden_dim": 8,
    "graph_dim": 4,
    "window": 2,
    "dialogs_per_batch": 2,
    "privileged": True,
    "drop_rate": 0.3,
    "reconstruction_weight": 1.0,
    "n_speakers": 2,
}
TRAIN = {"hidden_dim": 8, "dropout": 0.0}
DIMS = {"audio": 3, "visual": 4, "text": 5}


def conversations(n_dialogs: int, length: int, shuffle_turns: bool = False, seed: int = 0) -> Conversations:
    """n_dialogs dialogs of `length` utterances, rows dialog-major; two speakers taking turns at random."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for d in range(n_dialogs):
        turns = torch.randperm(length, generator=g).tolist() if shuffle_turns else range(length)
        for t in turns:
            rows.append(
                {
                    "utterance_id": f"d{d}_{t}",
                    "dialog": f"d{d}",
                    "turn": t,
                    "speaker": "AB"[int(torch.randint(0, 2, (1,), generator=g))],
                }
            )
    return Conversations.from_manifest(pd.DataFrame(rows), "toy.csv")


def dialog_toy(n_dialogs=24, length=10, seed=0, noise=3.0):
    """Every utterance of a dialog has the dialog's label; each utterance's features carry it weakly (noise
    `noise` around a class centre): one utterance alone is a poor guess, the dialog together a good one."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n_dialogs,), generator=g).repeat_interleave(length)
    features = [
        torch.randn(3, d, generator=g)[labels] + noise * torch.randn(len(labels), d, generator=g)
        for d in DIMS.values()
    ]
    return features, labels


def build(generators, **options):
    return GCNet(DIMS, 3, TRAIN, {**OPTIONS, **options}, generators)


def with_conversations(data: RunGroup, conv: Conversations) -> RunGroup:
    data.conversations = conv
    return data


def test_the_stacked_lstm_is_torchs_lstm_on_unpadded_sequences():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    stacked = StackedLSTM(5, 6, gens)
    x = torch.randn(2, 3, 7, 5)
    out = stacked(x, torch.ones(2, 3, 7, dtype=torch.bool))
    for r in range(2):
        reference = nn.LSTM(5, 6, batch_first=True, bidirectional=True)
        with torch.no_grad():
            for k, suffix in enumerate(("", "_reverse")):
                gates = slice(24 * k, 24 * (k + 1))  # 4H = 24 per direction
                getattr(reference, f"weight_ih_l0{suffix}").copy_(stacked.w_ih[r, :, gates].T)
                getattr(reference, f"weight_hh_l0{suffix}").copy_(stacked.w_hh[r, k].T)
                getattr(reference, f"bias_ih_l0{suffix}").copy_(stacked.bias[r, gates])
                getattr(reference, f"bias_hh_l0{suffix}").zero_()
        assert torch.allclose(out[r], reference(x[r])[0], atol=1e-5)


def test_padding_is_skipped_as_packed_sequences_skip_it():
    gens = [torch.Generator().manual_seed(1)]
    lstm = StackedLSTM(4, 5, gens)
    x = torch.randn(1, 1, 6, 4)
    valid = torch.tensor([[[True] * 4 + [False] * 2]])
    padded = lstm(x, valid)
    alone = lstm(x[:, :, :4], valid[:, :, :4])
    assert torch.allclose(padded[:, :, :4], alone, atol=1e-6)  # the backward direction starts at step 3
    assert padded[:, :, 4:].abs().max() == 0


def test_relations_are_the_references_window_edges_within_a_dialog():
    model = build([torch.Generator().manual_seed(0)], window=1)
    rows = torch.tensor([[[0, 1, 2, 0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    speaker = torch.tensor([0, 1, 1])
    rel = model._relations(rows, valid, speaker)[0, 0]  # [3 + 4, L, L]
    past, now, future = rel[0], rel[1], rel[2]
    assert past[1, 0] and not past[0, 1] and future[0, 1] and now.diagonal()[:3].all()
    assert not rel[:, 0, 2].any()  # two turns apart: outside window 1
    assert not rel[:, 3].any() and not rel[:, :, 3].any()  # padding has no edge
    # speaker relations: (target, source) = (1, 0) for the edge 0 -> 1
    assert rel[3 + 1 * 2 + 0, 1, 0] and rel[3 + 1 * 2 + 1, 2, 1]
    assert (rel[:3].sum(0) == rel[3:].sum(0)).all()  # both graphs have the same edges


def test_stacked_runs_equal_runs_one_at_a_time():
    features, labels = dialog_toy(n_dialogs=8, length=6)
    conv = conversations(8, 6)
    n = len(labels)
    masks = [mask(n, 0.2, 1), mask(n, 0.5, 2)]
    train_rows = [torch.arange(n), torch.arange(12, 42)]

    def train(runs, privileged):
        data, gens = group(
            features,
            labels,
            torch.stack([masks[r] for r in runs]),
            [train_rows[r] for r in runs],
            [3 + r for r in runs],
        )
        data = with_conversations(data, conv)
        model = build(gens, privileged=privileged)
        opt = StackedOptimizer(list(model.parameters()), SGD, len(runs))
        losses = torch.stack([train_epoch(model.train(), data, opt, 8) for _ in range(2)], 1)
        pred = model.eval().predict(data, data.padded([torch.arange(n)] * len(runs)))
        return model, losses, pred

    for privileged in (True, False):
        stacked, stacked_losses, stacked_pred = train([0, 1], privileged)
        for r in range(2):
            alone, alone_losses, alone_pred = train([r], privileged)
            assert torch.allclose(stacked_losses[r], alone_losses[0], atol=1e-5)
            for (key, p), q in zip(stacked.named_parameters(), alone.parameters()):
                assert torch.allclose(p[r], q[0], atol=1e-5), key
            assert torch.allclose(stacked_pred.fused_logits[r], alone_pred.fused_logits[0], atol=1e-5)
            assert torch.allclose(stacked_pred.unimodal_logits[r], alone_pred.unimodal_logits[0], atol=1e-5)


def test_the_reconstruction_loss_is_the_references_on_a_fixed_batch():
    """loss.py MaskedReconLoss: sum over missing cells of the squared error / the modality's width, divided by the
    number of utterances; here with the complete features as the targets (privileged, as the reference)."""
    features, labels = dialog_toy(n_dialogs=2, length=4)
    conv = conversations(2, 4)
    present = torch.ones(8, 3, dtype=torch.bool)
    present[1, 0] = present[5, 2] = False
    data, gens = group(features, labels, present.unsqueeze(0), [torch.arange(8)], [0])
    data = with_conversations(data, conv)
    model = build(gens, reconstruction_weight=1.0)
    step = next(model.training_steps(data, 8, 0))
    # the reference's formula on the model's outputs for both dialogs (the step's batch holds both; each dialog
    # is computed on its own, so their order in the batch does not change the loss)
    rows, valid = model._dialog_rows(conv.dialogs, torch.tensor([[0, 1]]))
    idx = rows.view(1, -1)
    x = model._inputs(data, idx, valid.view(1, -1), data.present_at(idx, valid.view(1, -1)))
    logits, recon = model._forward(x.view(1, 2, 4, -1), rows, valid, conv.speaker)
    truth = torch.cat([f[idx[0]] for f in features], dim=-1)
    miss = ~present[idx[0]]
    offsets = [0, 3, 7, 12]
    expected_recon = (
        sum(
            ((recon[0].reshape(8, -1)[:, a:b] - truth[:, a:b]) ** 2).sum(-1).div(b - a)[miss[:, m]].sum()
            for m, (a, b) in enumerate(itertools.pairwise(offsets))
        )
        / 8
    )
    ce = torch.nn.functional.cross_entropy(logits[0].reshape(8, -1), labels[idx[0]])
    assert torch.allclose(step.loss, (ce + expected_recon).unsqueeze(0), atol=1e-5)


def _accuracy(conv, seed):
    features, labels = dialog_toy(seed=seed)
    n = len(labels)
    train = torch.arange(n)[torch.arange(n) < 180]
    test = torch.arange(180, n)
    gens = [torch.Generator().manual_seed(seed)]
    data = RunGroup(
        features,
        labels,
        torch.ones(1, n, 3, dtype=torch.bool),
        [{"train": train, "val": train[:0], "test": test}],
        gens,
        standardize=True,
        conversations=conv,
    )
    model = build(gens, hidden_dim=16, graph_dim=8, privileged=False)
    opt = StackedOptimizer(
        list(model.parameters()), {"optimizer": "adam", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}, 1
    )
    for _ in range(40):
        train_epoch(model.train(), data, opt, 8)
    batch = data.padded([test])
    pred = model.eval().predict(data, batch).fused_logits.argmax(-1)
    return float((pred == batch.labels).float().mean())


def test_the_dialog_context_decides_the_toy_and_a_graph_without_dialogs_cannot_use_it():
    """Each utterance alone is a poor guess of its dialog's label; GCNet reads the dialog. The broken variant is
    the same network on a manifest whose every utterance is a dialog of its own (no context)."""
    n_dialogs, length = 24, 10
    alone_rows = pd.DataFrame(
        [
            {"utterance_id": str(i), "dialog": str(i), "turn": 0, "speaker": "A"}
            for i in range(n_dialogs * length)
        ]
    )
    no_context = Conversations.from_manifest(alone_rows, "alone.csv")
    with_context = [_accuracy(conversations(n_dialogs, length), seed) for seed in (0, 1)]
    without = [_accuracy(no_context, seed) for seed in (0, 1)]
    assert min(with_context) > 0.8
    assert max(without) < min(with_context) - 0.2


def test_a_corpus_without_conversations_is_a_clear_error():
    features, labels = dialog_toy(n_dialogs=2, length=3)
    data, gens = group(features, labels, torch.ones(1, 6, 3, dtype=torch.bool), [torch.arange(6)], [0])
    model = build(gens)
    with pytest.raises(ParamsError, match="gcnet reads conversations"):
        next(model.training_steps(data, 8, 0))


def test_a_manifest_with_some_utterances_outside_any_dialog_is_refused():
    rows = pd.DataFrame(
        {"utterance_id": ["a", "b"], "dialog": ["d", None], "turn": [0, None], "speaker": ["A", "B"]}
    )
    with pytest.raises(Exception, match="without a dialog or turn"):
        Conversations.from_manifest(rows, "m.csv")
    assert Conversations.from_manifest(rows.assign(dialog=None), "m.csv") is None
