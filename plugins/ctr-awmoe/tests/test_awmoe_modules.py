"""AW-MoE's network: the gate is a distribution, the experts are K independent towers, the
contrastive branch runs only in training, its masked views are what a forward pass over the masked
sequence gives, and the InfoNCE has the textbook value."""

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from ctr_dagster.testing import make_training_table, training_cardinalities
from ctr_dagster.training.batching import BatchEncoder
from ctr_dagster.training.spec import FeatureSpec
from ctr_din.modules import Dice

from ctr_awmoe.model import AwMoeConfig
from ctr_awmoe.modules import AwMoeNet, ExpertTowers, info_nce, packed_softmax
from ctr_awmoe.slices import history_lengths, long_tail_mask, long_tail_metrics


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def batch():
    table = make_training_table(600, seed=1)
    spec = FeatureSpec.from_cardinalities(training_cardinalities(table), max_seq_len=20)
    return spec, BatchEncoder.fit(table, spec).tensors(table)


def _net(spec, **config) -> AwMoeNet:
    torch.manual_seed(0)
    return AwMoeNet(spec, AwMoeConfig(embedding_dim=8, **config))


@pytest.mark.parametrize("config", [{}, {"gate_attention": "own"}, {"gate_softmax": False}])
def test_the_gate_is_a_distribution_and_reads_the_history(batch, config):
    spec, tensors = batch
    net = _net(spec, **config)
    for training in (True, False):
        net.train(training)
        with torch.no_grad():
            gate = net.gate_weights(tensors)
        assert gate.shape == (len(tensors["hist_len"]), 4)
        assert (gate >= 0).all()
        torch.testing.assert_close(gate.sum(1), torch.ones(len(gate)))
    empty = tensors["hist_len"] == 0
    with_history = ~empty
    assert empty.any() and with_history.sum() > 10
    # rows without history get the learned default gate softmax(b); the others vary with the history
    default = torch.softmax(net.gate.default.detach(), 0)
    torch.testing.assert_close(gate[empty], default.expand(int(empty.sum()), -1))
    assert gate[with_history].std(0).min() > 1e-4
    with torch.no_grad():
        net.gate.default.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0]))
        moved = net.gate_weights(tensors)
    torch.testing.assert_close(moved[empty][0], torch.softmax(torch.tensor([1.0, 0.0, -1.0, 2.0]), 0))


def test_the_output_is_the_gate_weighted_sum_of_the_expert_logits(batch):
    spec, tensors = batch
    net = _net(spec).eval()
    with torch.no_grad():
        enc = net._encode(tensors)
        logit = net(tensors)
    assert isinstance(logit, torch.Tensor) and logit.shape == (len(tensors["hist_len"]),)
    torch.testing.assert_close(logit, (enc["gate"] * enc["experts"]).sum(1))
    # the experts disagree: the gate is not a no-op
    assert (enc["experts"].std(1) > 1e-3).float().mean() > 0.9


def test_uniform_gate_has_no_gate_network_and_no_contrastive_loss(batch):
    spec, tensors = batch
    net = _net(spec, gate="uniform").train()
    assert net.gate is None and not any(name.startswith("gate.") for name, _ in net.named_parameters())
    out = net(tensors)
    assert isinstance(out, torch.Tensor)  # no aux_loss
    with torch.no_grad():
        torch.testing.assert_close(net.gate_weights(tensors), torch.full((len(out), 4), 0.25))
    shared, own = _net(spec), _net(spec, gate_attention="own")
    assert shared.gate.attention is None and own.gate.attention is not None


def test_training_adds_the_weighted_infonce_and_scoring_never_masks(batch):
    spec, tensors = batch
    net = _net(spec, cl_weight=0.5).train()
    torch.manual_seed(3)
    out = net(tensors)
    assert set(out) == {"logit", "aux_loss"} and out["aux_loss"].requires_grad
    recorded = net.take_cl_mean()
    assert recorded is not None and out["aux_loss"].item() == pytest.approx(0.5 * recorded, rel=1e-6)
    assert net.take_cl_mean() is None  # reset after reading
    out["aux_loss"].backward()  # the contrastive gradient reaches the gate unit and the tables
    assert net.gate.unit.net[0].weight.grad.abs().sum() > 0
    assert net.embeddings["item_idx"].weight.grad is not None
    # the loss is on the gate G, not on the logits: the expert towers get nothing from it
    assert all(p.grad is None or not p.grad.any() for p in net.tower.parameters())
    net.eval()
    with torch.no_grad():
        first, second = net(tensors), net(tensors)
    assert torch.equal(first, second) and net.take_cl_mean() is None  # scoring: no masks, no CL
    # the masks belong to the contrastive branch only: the training logit is the one the same net
    # gives without that branch (same weights, same dropout draws)
    torch.manual_seed(3)
    plain = _net(spec, cl_weight=0.0).train()(tensors)
    assert isinstance(plain, torch.Tensor)  # without the branch, training returns the logits alone
    torch.testing.assert_close(out["logit"].detach(), plain.detach(), rtol=1e-5, atol=1e-6)


def test_a_masked_view_equals_the_gate_of_the_masked_sequence(batch):
    """view_logits with keep (P, 2) == gate logits of a fresh pass over the sequence without the
    dropped behaviours (eval mode: Dice uses running statistics, so the passes are comparable)."""
    spec, tensors = batch
    from ctr_din.modules import real_slots

    for config in ({}, {"gate_softmax": False}, {"gate_attention": "own"}):
        net = _net(spec, **config).eval()
        rows, slots, _ = real_slots(tensors["hist_mask"])
        generator = torch.Generator().manual_seed(5)
        keep = torch.rand(len(rows), 2, generator=generator) >= 0.3
        with torch.no_grad():
            enc = net._encode(tensors)
            views = net.gate.view_logits(enc["a"], enc["g"], rows, len(tensors["hist_len"]), keep)
            for v in range(2):
                masked = dict(tensors)
                mask = torch.zeros_like(tensors["hist_mask"])
                mask[rows[keep[:, v]], slots[keep[:, v]]] = True
                masked["hist_mask"] = mask
                fresh = net._encode(masked)
                expected = net.gate.logits(fresh["a"], fresh["g"], fresh["rows"], len(mask))
                torch.testing.assert_close(views[:, v], expected, rtol=1e-5, atol=1e-5)


def test_contrastive_loss_skips_short_histories(batch):
    spec, tensors = batch
    net = _net(spec, cl_min_behaviours=1000).train()  # no row qualifies
    out = net(tensors)
    assert out["aux_loss"].item() == 0.0 and net.take_cl_mean() is None


def test_infonce_equals_the_two_cross_entropies():
    torch.manual_seed(0)
    u, v = torch.rand(50, 4), torch.rand(50, 4)
    for tau in (0.05, 0.2, 1.0):
        s = F.normalize(u, dim=1) @ F.normalize(v, dim=1).t() / tau
        target = torch.arange(50)
        expected = 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.t(), target))
        torch.testing.assert_close(info_nce(u, v, tau), expected, rtol=1e-5, atol=1e-5)
    # aligned views of distinct rows score lower than unrelated views
    distinct = torch.eye(4).repeat(3, 1) + 0.01 * torch.rand(12, 4)
    assert info_nce(distinct, distinct, 0.2) < info_nce(distinct, distinct.roll(1, 0), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(u, v, 0.01)


def test_packed_softmax_is_the_masked_softmax():
    scores = torch.tensor([0.5, -1.0, 3.0, 2.0, 100.0, 99.0])
    rows = torch.tensor([0, 0, 0, 2, 3, 3])
    out = packed_softmax(scores, rows, 4)
    torch.testing.assert_close(out[:3], torch.softmax(scores[:3], 0))
    torch.testing.assert_close(out[3], torch.tensor(1.0))
    torch.testing.assert_close(out[4:], torch.softmax(scores[4:], 0))


@pytest.mark.parametrize("units", [[6, 5, 3], [6], []])
def test_expert_towers_are_k_independent_mlps(units):
    torch.manual_seed(0)
    towers = ExpertTowers(7, units, 3, "dice")
    x = torch.randn(40, 7)
    for training in (True, False):
        towers.train(training)
        out = towers(x)
        assert out.shape == (40, 3)
        for k in range(3):
            h = x
            widths = [7, *units]
            for layer, width in enumerate(units):
                if layer == 0:
                    w = towers.first.weight[k * width : (k + 1) * width]
                    h = F.linear(h, w, towers.first.bias[k * width : (k + 1) * width])
                else:
                    h = h @ towers.weights[layer - 1][k] + towers.biases[layer - 1][k]
                act = towers.acts[layer]
                dice = Dice(width)  # the expert's own Dice, with the expert's channels
                dice.train(training)
                dice.alpha.data = act.alpha.data.view(3, width)[k].clone()
                dice.bn.running_mean = act.bn.running_mean.view(3, width)[k].clone()
                dice.bn.running_var = act.bn.running_var.view(3, width)[k].clone()
                h = dice(h)
                assert widths[layer + 1] == width
            expected = h @ towers.out_weight[k] + towers.out_bias[k]
            torch.testing.assert_close(out[:, k], expected, rtol=1e-4, atol=1e-5)


def test_config_rejects_bad_values():
    for bad, match in (
        ({"gate": "mean"}, "gate"),
        ({"num_experts": 1}, "num_experts"),
        ({"mask_rate": 0.0}, "mask_rate"),
        ({"mask_rate": 1.0}, "mask_rate"),
        ({"cl_temperature": 0.0}, "cl_temperature"),
        ({"cl_weight": -1.0}, "cl_weight"),
        ({"cl_min_behaviours": 0}, "cl_min_behaviours"),
        ({"gate_attention": "both"}, "gate_attention"),
        ({"use_softmax": True}, "use_softmax"),  # shared scores need raw weights
        ({"gate_units": [0]}, "gate_units"),
        ({"tower_activation": "tanh"}, "tower_activation"),
        ({"attention_units": []}, "attention_units"),
    ):
        with pytest.raises(ValueError, match=match):
            AwMoeConfig(**bad)
    AwMoeConfig(use_softmax=True, gate_attention="own")  # fine with its own unit


def test_long_tail_slice_counts_the_rows_history():
    table = pa.table(
        {
            "user_id": ["a", "a", "b", "b", "c", "c", "d", "d"],
            "label": [1, 0, 1, 0, 0, 1, 1, 0],
            "hist_item_idx": [[], [3], [1, 2, 3], [1, 2, 3, 4], [5] * 9, [5] * 10, None, [2, 2]],
        }
    )
    np.testing.assert_array_equal(history_lengths(table), [0, 1, 3, 4, 9, 10, 0, 2])
    np.testing.assert_array_equal(long_tail_mask(table), [1, 1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(long_tail_mask(table, 3, min_behaviours=1), [0, 1, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.8, 0.7, 0.6])
    out = long_tail_metrics(table, scores)
    assert out["rows"] == 8 and out["long_tail_rows"] == 5
    # long-tail rows: labels [1, 0, 1, 1, 0], scores [0.9, 0.1, 0.2, 0.7, 0.6]: 5 of 6 pairs ordered
    assert out["long_tail_auc"] == pytest.approx(5 / 6)
    # per user within the slice: a (1 vs 0: 1.0, 2 rows), d (1 vs 0: 1.0, 2 rows); b has one class
    assert out["long_tail_gauc"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        long_tail_mask(table, 1, min_behaviours=2)
