"""TIN's network, piece by piece, against hand-written references."""

import math

import pytest
import torch
from ctr_dagster.training.spec import ID_SEQUENCES, FeatureSpec

from ctr_tin.model import TinConfig, TinModel
from ctr_tin.modules import TinNet, time_bucket_edges

L = 6
CARDS = {
    "user_idx": 20,
    "item_idx": 40,
    "category_idx": 8,
    "device_idx": 4,
    "region_idx": 5,
    "age_group_idx": 7,
}


def spec_for(config: TinConfig) -> FeatureSpec:
    return TinModel(config).feature_spec(CARDS, None, L)


def make_batch(seed: int = 0, rows: int = 5) -> dict[str, torch.Tensor]:
    """Right-aligned histories of lengths 0 (row 0), 1 (row 1), full (row 2) and random."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, L] + torch.randint(1, L + 1, (rows - 3,), generator=g).tolist())
    mask = torch.arange(L)[None, :] >= (L - lengths)[:, None]
    items = torch.randint(2, CARDS["item_idx"], (rows, L), generator=g) * mask
    cats = torch.randint(2, CARDS["category_idx"], (rows, L), generator=g) * mask
    rel_pos = (L - torch.arange(L))[None, :].expand(rows, L) * mask
    age = torch.rand(rows, L, generator=g) * 1e6
    age = torch.sort(age, dim=1, descending=True).values * mask  # most recent (smallest age) last
    batch = {
        "item_idx": torch.randint(2, CARDS["item_idx"], (rows,), generator=g),
        "category_idx": torch.randint(2, CARDS["category_idx"], (rows,), generator=g),
        "hist_item_idx": items,
        "hist_category_idx": cats,
        "hist_rel_pos": rel_pos.long(),
        "hist_age_s": age.float(),
        "hist_mask": mask,
        "hist_len": lengths,
        "dense": torch.randn(rows, 5, generator=g),
        "hour": torch.randint(0, 24, (rows,), generator=g),
        "day_of_week": torch.randint(0, 7, (rows,), generator=g),
    }
    for name in ("user_idx", "device_idx", "region_idx", "age_group_idx"):
        batch[name] = torch.randint(2, CARDS[name], (rows,), generator=g)
    return batch


def build(**overrides) -> TinNet:
    torch.manual_seed(0)
    config = TinConfig(**overrides)
    return TinNet(spec_for(config), config).eval()


def reference_attention(net: TinNet, batch):
    """Plain scaled dot-product target attention on the raw item tokens, written out by hand."""
    q = net.item_token(batch["item_idx"], batch["category_idx"])  # (B, D)
    keys = net.item_token(batch["hist_item_idx"], batch["hist_category_idx"])  # (B, L, D)
    d = q.shape[1]
    weights = torch.zeros(keys.shape[:2])
    for b in range(q.shape[0]):
        real = batch["hist_mask"][b].nonzero().squeeze(1)
        if len(real):
            scores = torch.stack([keys[b, j] @ q[b] for j in real]) / math.sqrt(d)
            weights[b, real] = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
    pooled = torch.einsum("bl,bld->bd", weights, keys)
    return weights, pooled


@pytest.mark.parametrize("position", ["rank", "time_bucket", "rank_time"])
def test_with_positions_zeroed_it_is_plain_scaled_dot_product_attention(position):
    net = build(position=position)
    batch = make_batch()
    with torch.no_grad():
        pooled, weights = net.attend(*net.encode(batch))
        ref_weights, ref_pooled = reference_attention(net, batch)
        # with the learned (random-initialised) positions the weights are NOT the plain ones ...
        assert (weights - ref_weights).abs().max() > 1e-3
        # ... and with the position table zeroed they are, exactly up to float rounding
        for table in net.temporal.tables():
            table.weight.zero_()
        pooled, weights = net.attend(*net.encode(batch))
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-6, rtol=1e-5)


def test_without_positions_it_is_plain_scaled_dot_product_attention():
    net = build(use_positions=False)
    assert net.temporal is None and "hist_rel_pos" not in net.spec.sequence
    batch = make_batch(seed=3)
    with torch.no_grad():
        pooled, weights = net.attend(*net.encode(batch))
        ref_weights, ref_pooled = reference_attention(net, batch)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-6, rtol=1e-5)


def test_masked_slots_get_zero_weight_and_real_ones_sum_to_one():
    net = build()
    batch = make_batch(seed=1, rows=8)
    # garbage in the padded slots must not leak into the weights or the pooled vector
    noisy = dict(batch)
    pad = ~batch["hist_mask"]
    noisy["hist_item_idx"] = torch.where(
        pad, torch.full_like(batch["hist_item_idx"], 7), batch["hist_item_idx"]
    )
    noisy["hist_age_s"] = torch.where(pad, torch.full_like(batch["hist_age_s"], 5.0), batch["hist_age_s"])
    with torch.no_grad():
        pooled, weights = net.attend(*net.encode(batch))
        pooled_noisy, weights_noisy = net.attend(*net.encode(noisy))
    assert torch.all(weights[pad] == 0) and torch.all(weights_noisy[pad] == 0)
    torch.testing.assert_close(pooled, pooled_noisy)
    sums = weights.sum(1)
    has = batch["hist_len"] > 0
    torch.testing.assert_close(sums[has], torch.ones(int(has.sum())))
    assert torch.all(sums[~has] == 0) and torch.all(pooled[~has] == 0)  # no history: pooled 0
    assert torch.all(weights[has].max(1).values > 0)


def test_paper_representation_is_the_per_behaviour_product_sum():
    net = build(representation="paper")
    batch = make_batch(seed=2)
    with torch.no_grad():
        target, keys, mask = net.encode(batch)
        pooled, weights = net.attend(target, keys, mask)
        rep = net.representation(target, pooled)
        per_behaviour = sum(weights[:, i, None] * (keys[:, i] * target) for i in range(L))
    d = net.token_dim
    torch.testing.assert_close(rep[:, :d], per_behaviour, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rep[:, d:], target)


def test_code_representation_is_pooled_dense_then_product():
    net = build(representation="code")
    batch = make_batch(seed=2)
    with torch.no_grad():
        target, keys, mask = net.encode(batch)
        pooled, _ = net.attend(target, keys, mask)
        rep = net.representation(target, pooled)
        u = net.pooled_dense(net.pooled_bn(pooled))
    assert rep.shape[1] == 3 * net.token_dim
    torch.testing.assert_close(rep, torch.cat([u, target, u * target], dim=1))


def test_target_and_behaviours_share_one_position_table_row_zero_for_the_target():
    net = build(position="rank")
    batch = make_batch(seed=4)
    table = net.temporal.rank_table.weight
    with torch.no_grad():
        target, keys, _ = net.encode(batch)
        raw_q = net.item_token(batch["item_idx"], batch["category_idx"])
        raw_k = net.item_token(batch["hist_item_idx"], batch["hist_category_idx"])
    torch.testing.assert_close(target - raw_q, table[0].expand_as(raw_q))
    # slot j of a full row (row 2) is rel_pos L - j: most recent (last slot) = row 1
    torch.testing.assert_close(keys[2] - raw_k[2], table[torch.arange(L, 0, -1)])


def test_rank_time_adds_a_rank_row_and_a_time_row_row_zero_for_the_target():
    net = build(position="rank_time")
    batch = make_batch(seed=7)
    enc = net.temporal
    with torch.no_grad():
        target, keys, _ = net.encode(batch)
        raw_q = net.item_token(batch["item_idx"], batch["category_idx"])
        raw_k = net.item_token(batch["hist_item_idx"], batch["hist_category_idx"])
        rows = enc.rank_table.weight[enc.rank_indices(batch)] + enc.time_table.weight[enc.time_indices(batch)]
    zero = enc.rank_table.weight[0] + enc.time_table.weight[0]
    torch.testing.assert_close(target - raw_q, zero.expand_as(raw_q))
    torch.testing.assert_close(keys - raw_k, rows)
    assert net.spec.sequence == ID_SEQUENCES + ("hist_rel_pos", "hist_age_s")


def test_time_buckets_are_log_spaced_monotone_and_reserve_target_and_unknown_rows():
    config = TinConfig(position="time_bucket", time_buckets=10, time_bucket_min_s=60.0, time_bucket_max_s=6e6)
    net = TinNet(spec_for(config), config)
    edges = time_bucket_edges(10, 60.0, 6e6)
    assert len(edges) == 9 and edges[0] == pytest.approx(60.0) and edges[-1] == pytest.approx(6e6, rel=1e-5)
    ratios = edges[1:] / edges[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()))
    age = torch.tensor([[1.0, 59.0, 61.0, 1e3, 1e5, 1e9, -1.0]])
    idx = net.temporal.time_indices({"hist_age_s": age})
    assert idx.tolist() == [[1, 1, 2, 3, 7, 10, 11]]  # never 0 (the target's row); 11 = unknown age
    assert net.temporal.time_table.num_embeddings == 12 and net.temporal.rank_table is None


def test_item_bias_is_added_to_the_logit():
    net = build()
    batch = make_batch(seed=5)
    with torch.no_grad():
        before = net(batch)
        net.item_bias.weight[batch["item_idx"][0]] = 2.5
        after = net(batch)
    shifted = batch["item_idx"] == batch["item_idx"][0]
    torch.testing.assert_close(after[shifted] - before[shifted], torch.full((int(shifted.sum()),), 2.5))
    torch.testing.assert_close(after[~shifted], before[~shifted])


def test_feature_spec_lists_the_column_the_positions_read():
    assert spec_for(TinConfig(position="rank")).sequence == ID_SEQUENCES + ("hist_rel_pos",)
    assert spec_for(TinConfig(position="time_bucket")).sequence == ID_SEQUENCES + ("hist_age_s",)
    assert spec_for(TinConfig(position="rank_time")).sequence == ID_SEQUENCES + ("hist_rel_pos", "hist_age_s")
    assert spec_for(TinConfig(use_positions=False)).sequence == ID_SEQUENCES


@pytest.mark.parametrize(
    "bad",
    [
        {"position": "minutes"},
        {"representation": "both"},
        {"tower_activation": "tanh"},
        {"time_buckets": 1},
        {"time_bucket_min_s": 100.0, "time_bucket_max_s": 10.0},
        {"tower_units": []},
        {"dropout": 1.0},
        {"embedding_dim": 0},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        TinConfig(**bad)


def test_gradients_reach_the_position_table_and_every_parameter_is_finite():
    net = build(position="rank_time")
    net.train()
    batch = make_batch(seed=6, rows=16)
    loss = net(batch).pow(2).mean()
    loss.backward()
    for table in net.temporal.tables():
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
