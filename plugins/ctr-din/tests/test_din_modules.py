"""DIN's building blocks: Dice, the local activation unit (shapes, masking, no softmax, the exact
fast rewrites) and the network's scoring paths."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from ctr_dagster.contracts import FitContext
from ctr_dagster.testing import make_training_table, training_cardinalities
from ctr_dagster.training.spec import FeatureSpec

from ctr_din.model import DinConfig, DinModel
from ctr_din.modules import ActivationUnit, Dice, DinNet, SmallTable, real_slots


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _history(batch=5, length=6, dim=8, lengths=(0, 1, 3, 6, 2)):
    q = torch.randn(batch, dim)
    keys = torch.randn(batch, length, dim)
    hist_len = torch.tensor(lengths)
    mask = torch.arange(length)[None, :] >= (length - hist_len)[:, None]  # right-aligned
    return q, keys, mask


def _packed(unit, q, keys, mask):
    rows, slots = mask.nonzero(as_tuple=True)
    pooled, w = unit.forward_packed(q, keys[rows, slots], rows, slots, mask.shape[1])
    dense = torch.zeros(mask.shape)
    dense[rows, slots] = w
    return pooled, dense


# -- Dice -----------------------------------------------------------------------------------------


def test_dice_uses_a_non_affine_batchnorm_with_fuxictr_settings():
    dice = Dice(4)
    assert not dice.bn.affine and dice.bn.eps == 1e-9 and dice.bn.momentum == 0.01
    assert torch.equal(dice.alpha.detach(), torch.zeros(4))  # alpha initialised to 0


def test_dice_with_zero_alpha_is_p_times_x_and_otherwise_adds_alpha_one_minus_p_x():
    dice = Dice(3)
    x = torch.randn(64, 3) * 2 + 1
    p = torch.sigmoid((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-9))
    torch.testing.assert_close(dice(x), p * x)
    with torch.no_grad():
        dice.alpha.fill_(0.3)
    torch.testing.assert_close(dice(x), p * x + 0.3 * (1 - p) * x)


def test_dice_is_a_prelu_whose_switch_follows_the_data():
    dice = Dice(1)
    with torch.no_grad():
        dice.alpha.fill_(0.25)
    for _ in range(600):  # running statistics converge (momentum 0.01) to mean 5, std 1
        dice(torch.randn(256, 1) + 5.0)
    dice.eval()
    assert dice.bn.running_mean.item() == pytest.approx(5.0, abs=0.1)
    x = torch.tensor([[20.0], [-20.0], [5.0]])
    y = dice(x).squeeze(1)
    assert y[0].item() == pytest.approx(20.0, rel=1e-4)  # far above the mean: identity
    assert y[1].item() == pytest.approx(0.25 * -20.0, rel=1e-4)  # far below: alpha * x
    assert y[2].item() == pytest.approx(5.0 * (0.5 + 0.25 * 0.5), rel=1e-2)  # at the mean: half way
    with torch.inference_mode():  # the fused scoring path computes the same function
        torch.testing.assert_close(dice(x).squeeze(1), y)


# -- the local activation unit --------------------------------------------------------------------


def test_first_layer_split_equals_the_concatenated_input():
    unit = ActivationUnit(8, [16])
    q, k = torch.randn(7, 8), torch.randn(7, 8)
    a, bk, c = unit.split_weights()
    split = q @ a.t() + k @ bk.t() + (q * k) @ c.t() + unit.first.bias
    torch.testing.assert_close(split, unit.first(torch.cat([q, k, q - k, q * k], 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["dice", "relu"])
def test_packed_real_slots_equal_the_textbook_form(act):
    unit = ActivationUnit(8, [16, 8], act)
    q, keys, mask = _history()
    unit.train()
    for _ in range(3):  # give Dice some running statistics
        _packed(unit, q, keys, mask)
    unit.eval()
    pooled, w = _packed(unit, q, keys, mask)
    ref_pooled, ref_w = unit.reference(q, keys, mask)
    assert pooled.shape == (5, 8) and ref_w.shape == (5, 6)
    torch.testing.assert_close(w, ref_w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-4, atol=1e-5)


def test_padded_slots_get_zero_weight_and_do_not_matter():
    unit = ActivationUnit(8, [16]).eval()
    q, keys, mask = _history()
    pooled, w = _packed(unit, q, keys, mask)
    assert torch.all(w[~mask] == 0) and torch.all(w[mask] != 0)
    assert torch.all(pooled[0] == 0)  # empty history: zero interest
    noisy = keys.clone()
    noisy[~mask] = 1e3 * torch.randn(int((~mask).sum()), 8)
    torch.testing.assert_close(unit.reference(q, noisy, mask)[0], pooled, rtol=1e-4, atol=1e-5)


def test_no_softmax_by_default_and_a_masked_softmax_on_request():
    q, keys, mask = _history()
    unit = ActivationUnit(8, [16]).eval()
    _, w = _packed(unit, q, keys, mask)
    assert not torch.allclose(w[1:].sum(1), torch.ones(4))  # unnormalised: intensity is kept
    soft = ActivationUnit(8, [16], use_softmax=True).eval()
    _, ws = _packed(soft, q, keys, mask)
    torch.testing.assert_close(ws[1:].sum(1), torch.ones(4))
    assert torch.all(ws[0] == 0) and torch.all(ws[~mask] == 0)
    torch.testing.assert_close(ws, soft.reference(q, keys, mask)[1])


def test_shared_history_path_equals_the_packed_path(monkeypatch):
    from ctr_din import modules

    unit = ActivationUnit(8, [16]).eval()
    keys = torch.randn(4, 8)
    q = torch.randn(50, 8)
    full = keys.unsqueeze(0).expand(50, 4, 8)
    mask = torch.ones(50, 4, dtype=torch.bool)
    pooled, _ = _packed(unit, q, full, mask)
    with torch.inference_mode():
        torch.testing.assert_close(unit.forward_shared(q, keys), pooled, rtol=1e-4, atol=1e-5)
        monkeypatch.setattr(modules, "SHARED_CHUNK_ELEMENTS", 3 * 4 * 16)  # chunks of 3 rows
        torch.testing.assert_close(unit.forward_shared(q, keys), pooled, rtol=1e-4, atol=1e-5)
        assert torch.all(unit.forward_shared(q, keys[:0]) == 0)


# -- the network and the plugin ------------------------------------------------------------------


def _spec(max_seq_len=6, item_dim=None):
    cards = {
        "user_idx": 20,
        "item_idx": 30,
        "category_idx": 6,
        "device_idx": 4,
        "region_idx": 4,
        "age_group_idx": 8,
    }
    return FeatureSpec.from_cardinalities(cards, max_seq_len=max_seq_len, item_embedding_dim=item_dim)


def test_din_net_shapes_and_pooled_interest_replaces_the_sequence_in_the_tower():
    spec = _spec()
    net = DinNet(spec, DinConfig(embedding_dim=4, attention_units=[8], tower_units=[16], use_user_idx=True))
    # tower input: 6 other fields x 4 + target token (8) + pooled interest (8) + dense
    assert net.tower.net[0].in_features == 6 * 4 + 8 + 8 + len(spec.dense)
    assert "user_idx" not in DinNet(spec, DinConfig(embedding_dim=4)).embeddings  # the default
    table = make_training_table(200, seed=1)
    from ctr_dagster.training.batching import BatchEncoder

    batch = BatchEncoder.fit(table, spec).tensors(table)
    assert net(batch).shape == (200,)


def test_item_embeddings_switch_needs_the_vectors():
    table = make_training_table(300, seed=1)
    model = DinModel(DinConfig(use_item_embeddings=True, epochs=1))
    with pytest.raises(ValueError, match="use_item_embeddings is on but no item embeddings"):
        model.fit(table, table.slice(0, 0), FitContext(cardinalities=training_cardinalities(table)))
    net = DinNet(_spec(item_dim=5), DinConfig(embedding_dim=4), torch.randn(30, 5))
    assert net.token_dim == 12 and net.item_projection.bias is None
    assert not net.item_vectors.requires_grad and "item_vectors" in net.state_dict()


def test_scoring_one_users_candidates_matches_row_by_row():
    """1,000 candidates of one user (shared-history path) score as each row alone (packed path)."""
    table = make_training_table(3000, seed=0)
    train = table.filter(pc.equal(table.column("split"), "train"))
    model = DinModel(DinConfig(epochs=1, batch_size=256, num_threads=1, log_every=0))
    model.fit(
        train, train.slice(0, 0), FitContext(cardinalities=training_cardinalities(table), log=lambda s: None)
    )
    row = table.filter(pc.greater(pc.list_value_length(table.column("hist_item_idx")), 3)).slice(0, 1)
    n = 1000
    candidates = pa.concat_tables([row] * n)
    items = np.random.default_rng(0).integers(2, 60, n).astype(np.int32)
    candidates = candidates.set_column(
        candidates.schema.get_field_index("item_idx"), "item_idx", pa.array(items)
    )
    scores = model.predict(candidates)
    assert scores.shape == (n,) and len(np.unique(scores)) > 10
    single = np.array([model.predict(candidates.slice(i, 1))[0] for i in range(0, n, 97)])
    np.testing.assert_allclose(scores[::97], single, rtol=1e-5, atol=1e-6)


def test_sum_pooling_ablation_has_no_attention_and_sums_the_real_behaviours():
    """pooling="sum": every real behaviour weighted 1 (the target-attention ablation); both scoring
    paths agree, and the rest of the network is the attention model's."""
    spec = _spec()
    config = DinConfig(embedding_dim=4, tower_units=[16], pooling="sum")
    net = DinNet(spec, config).eval()
    assert net.attention is None
    with_attention = DinNet(spec, DinConfig(embedding_dim=4, tower_units=[16]))
    assert net.tower.net[0].in_features == with_attention.tower.net[0].in_features
    table = make_training_table(300, seed=1)
    from ctr_dagster.training.batching import BatchEncoder

    batch = BatchEncoder.fit(table, spec).tensors(table)
    row = int(torch.nonzero(batch["hist_len"] > 2)[0])
    one = {k: v[row : row + 1].expand(28, *v.shape[1:]).clone() for k, v in batch.items()}
    one["item_idx"] = torch.arange(2, 30)
    with torch.inference_mode():
        shared = net(one)  # one history for every row: the shared-history path
        packed = torch.stack([net({k: v[i : i + 1] for k, v in one.items()})[0] for i in range(28)])
        torch.testing.assert_close(shared, packed, rtol=1e-5, atol=1e-5)
        mask = batch["hist_mask"][row]
        keys = net.item_token(batch["hist_item_idx"][row][mask], batch["hist_category_idx"][row][mask])
        rows, slots, flat = real_slots(batch["hist_mask"])
        pooled = net.item_token(
            batch["hist_item_idx"].reshape(-1)[flat], batch["hist_category_idx"].reshape(-1)[flat]
        )
        summed = torch.zeros(len(batch["hist_len"]), net.token_dim).index_add_(0, rows, pooled)
        torch.testing.assert_close(summed[row], keys.sum(0))
    with pytest.raises(ValueError, match="pooling"):
        DinConfig(pooling="max")


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="attention_units"):
        DinConfig(attention_units=[])
    with pytest.raises(ValueError, match="lr_schedule"):
        DinConfig(lr_schedule="sometimes")


def test_small_table_has_the_embedding_values_and_gradients():
    reference = torch.nn.Embedding(14, 4, padding_idx=0)
    fast = SmallTable(14, 4, padding_idx=0)
    fast.load_state_dict(reference.state_dict())
    ids = torch.tensor([[0, 3, 3], [5, 0, 13]])
    upstream = torch.randn(2, 3, 4)

    out = fast(ids)
    assert torch.equal(out, reference(ids))
    (out * upstream).sum().backward()
    (reference(ids) * upstream).sum().backward()
    assert torch.allclose(fast.weight.grad, reference.weight.grad, atol=1e-6)
    assert fast.weight.grad[0].abs().sum() == 0  # the padding row never learns
    assert fast.weight.grad[3].abs().sum() > 0
