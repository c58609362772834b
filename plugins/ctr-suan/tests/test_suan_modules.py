"""SUAN's network, piece by piece: the causal mask, the shared biases, the block order, the sparse
pattern, the trimmed length groups, and the history encoded once per request."""

import math
import subprocess
import sys

import pytest
import torch
from ctr_dagster.training.spec import ID_SEQUENCES

from ctr_suan.model import GRADES, LightSuanConfig, LightSuanModel, SuanConfig, SuanModel
from ctr_suan.modules import (
    LOG_BUCKET_DIVISOR,
    SuanBlock,
    SuanNet,
    attention_pattern,
    length_groups,
    log_time_buckets,
    sparse_pattern_count,
)

L = 8
N = L + 1
CARDS = {
    "user_idx": 20,
    "item_idx": 40,
    "category_idx": 8,
    "device_idx": 4,
    "region_idx": 5,
    "age_group_idx": 7,
}


def build(model=SuanModel, **overrides) -> SuanNet:
    config = model.Config(**{"max_seq_len": L, **overrides})
    spec = model(config).feature_spec(CARDS, None, L)
    torch.manual_seed(0)
    return SuanNet(spec, config, config.resolved()).eval()


def make_batch(seed: int = 0, rows: int = 6) -> dict[str, torch.Tensor]:
    """Right-aligned histories of lengths 0 (row 0), 1 (row 1), full (rows 2, 3) and random."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, L, L] + torch.randint(1, L + 1, (rows - 4,), generator=g).tolist())
    mask = torch.arange(L)[None, :] >= (L - lengths)[:, None]
    age = torch.sort(torch.rand(rows, L, generator=g) * 1e6, dim=1, descending=True).values * mask
    batch = {
        "item_idx": torch.randint(2, CARDS["item_idx"], (rows,), generator=g),
        "category_idx": torch.randint(2, CARDS["category_idx"], (rows,), generator=g),
        "hist_item_idx": torch.randint(2, CARDS["item_idx"], (rows, L), generator=g) * mask,
        "hist_category_idx": torch.randint(2, CARDS["category_idx"], (rows, L), generator=g) * mask,
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


# -- the causal mask ---------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["dense", "sparse"])
@pytest.mark.parametrize("changed", [2, 5, L - 1, L])  # a behaviour slot, or L = the candidate
def test_changing_a_later_token_never_changes_an_earlier_tokens_output(attention, changed):
    net = build(attention=attention, n_layers=2)
    batch = make_batch()
    other = {k: v.clone() for k, v in batch.items()}
    full = slice(2, 4)  # rows with a full history: every slot is a real token
    if changed == L:
        other["item_idx"][full] = (batch["item_idx"][full] + 7) % 38 + 2
        other["category_idx"][full] = (batch["category_idx"][full] + 3) % 6 + 2
    else:
        other["hist_item_idx"][full, changed] = (batch["hist_item_idx"][full, changed] + 7) % 38 + 2
        other["hist_age_s"][full, changed] = batch["hist_age_s"][full, changed] * 0.5
    with torch.no_grad():
        before, _, _ = net.encode(batch)
        after, _, _ = net.encode(other)
    torch.testing.assert_close(after[full, :changed], before[full, :changed], rtol=0, atol=0)
    assert (after[full, changed:] - before[full, changed:]).abs().amax(dim=(0, 2)).min() > 1e-4
    # rows that were not changed are not changed
    torch.testing.assert_close(after[4:], before[4:], rtol=0, atol=0)


def test_the_codes_all_token_gate_pool_leaks_the_candidate_into_the_history():
    """gate_pool="all" (the official MS_SeNet: mean over every token) is not causal."""
    net = build(gate_pool="all")
    batch = make_batch()
    other = {k: v.clone() for k, v in batch.items()}
    other["item_idx"] = (batch["item_idx"] + 7) % 38 + 2
    with torch.no_grad():
        before, _, _ = net.encode(batch)
        after, _, _ = net.encode(other)
    assert (after[2:4, :L] - before[2:4, :L]).abs().max() > 1e-4


def test_real_tokens_never_attend_padding_and_padding_rows_stay_finite():
    net = build()
    batch = make_batch(seed=1)
    mask, valid = net.attention_mask(batch)
    allowed = torch.isfinite(mask)
    eye = torch.eye(N, dtype=torch.bool)
    assert torch.equal(allowed & ~eye, attention_pattern(N) & valid[:, None, :] & ~eye)
    assert torch.all(allowed[:, eye])  # every query sees itself: no empty softmax row
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["hist_mask"]
    noisy["hist_item_idx"][pad] = 9
    noisy["hist_age_s"][pad] = 123.0
    with torch.no_grad():
        out, _, _ = net.encode(batch)
        out_noisy, _, _ = net.encode(noisy)
    real = valid
    torch.testing.assert_close(out[real], out_noisy[real], rtol=0, atol=1e-6)
    assert torch.isfinite(out).all()


# -- the shared biases ---------------------------------------------------------------------------------
def test_bias_shapes_toeplitz_position_bias_and_log_time_buckets():
    net = build(num_time_buckets=16)
    batch = make_batch(rows=5)
    bias = net.bias
    pos = bias.position_bias()
    assert pos.shape == (N, N) and bias.pos_w.shape == (2 * N - 1,)
    for i in range(N):
        for j in range(N):
            assert pos[i, j] == bias.pos_w[N - 1 + j - i]
    t, known = net.times(batch)
    assert t.shape == (5, N) and torch.all(t[:, -1] == 0)  # the candidate's age is 0
    assert bias.time_bias(t, known).shape == (5, N, N)
    assert bias.ts_w.shape == (16 + 2,)  # buckets 0..16 and an unknown-time row
    mask, _ = net.attention_mask(batch)
    assert mask.shape == (5, N, N)
    ok = torch.isfinite(mask)
    full = bias(t, known)
    assert full.shape == (5, N, N)
    torch.testing.assert_close(mask[ok], full[ok])
    torch.testing.assert_close(full, pos.unsqueeze(0) + bias.time_bias(t, known))


def test_time_buckets_follow_the_codes_formula():
    dt = torch.tensor([0.0, 1.0, 2.0, -2.0, 60.0, 3600.0, 86400.0, 1e9])
    expected = [min(int(math.log(max(abs(x), 1.0)) / LOG_BUCKET_DIVISOR), 40) for x in dt.tolist()]
    assert log_time_buckets(dt, 40).tolist() == expected
    assert expected[:4] == [0, 0, 2, 2] and expected[-1] == 40  # clipped at num_buckets
    net = build(num_time_buckets=40)
    t = torch.tensor([[100.0, 10.0, 0.0] + [0.0] * (N - 3)])
    known = torch.tensor([[True, False] + [True] * (N - 2)])
    idx = net.bias.time_indices(t, known)
    assert idx[0, 0, 2] == log_time_buckets(torch.tensor(100.0), 40)
    assert idx[0, 1, 2] == 41 and idx[0, 2, 1] == 41  # unknown time: its own row


def test_the_bias_is_computed_once_per_forward_and_shared_by_every_block():
    net = build(n_layers=3)
    calls = []
    net.bias.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        net.forward_full(make_batch())
    assert len(net.blocks) == 3
    assert len(calls) == len(length_groups(make_batch()["hist_len"], L))  # once per length group
    net.trim = False
    calls.clear()
    with torch.no_grad():
        net.forward_full(make_batch())
    assert len(calls) == 1


# -- the block ------------------------------------------------------------------------------------------
def test_block_calls_its_parts_in_the_codes_order():
    net = build(n_layers=1)
    block = net.blocks[0]
    seen = []
    for name in SuanBlock.ORDER:
        getattr(block, name).register_forward_hook(lambda m, i, o, name=name: seen.append(name))
    with torch.no_grad():
        net.encode(make_batch())
    assert seen == ["norm1", "attention", "norm2", "cross", "fusion", "norm3", "ffn"]


def test_block_residuals_are_the_codes():
    """out = x3 + FFN(x3), x3 = N3(x2 + Fuse(x2, c)), c = Cross(x2), x2 = N2(x1 + SA(x1)), x1 = N1(x)."""
    net = build(n_layers=1)
    block = net.blocks[0]
    batch = make_batch(seed=2)
    with torch.no_grad():
        x, _ = net.tokens(batch)
        profile = net.profile(batch)
        mask, valid = net.attention_mask(batch)
        out = block(x, profile, mask, valid)
        x1 = block.norm1(x)
        x2 = block.norm2(x1 + block.attention(x1, mask))
        c = block.cross(x2, profile)
        w = valid.float().unsqueeze(-1)
        pooled = torch.cumsum((x2 + c) * w, 1) / torch.cumsum(w, 1).clamp(min=1)
        w1 = block.fusion.weights(pooled)  # the two-way softmax, written out
        x3 = block.norm3(x2 + w1 * x2 + (1 - w1) * c)
        ref = x3 + block.ffn(x3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_parts_match_the_codes_formulas():
    net = build(n_layers=1)
    block = net.blocks[0]
    x = torch.randn(3, N, net.dim)
    with torch.no_grad():
        block.norm1.gamma.copy_(torch.linspace(0.5, 1.5, net.dim))
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        torch.testing.assert_close(block.norm1(x), block.norm1.gamma * x / (rms + 1e-6))
        assert block.ffn.w3.in_features == 3 * net.dim  # SwiGLU hidden 3D
        w1, w2 = block.ffn.w12.weight.chunk(2)
        b1, b2 = block.ffn.w12.bias.chunk(2)
        ffn = block.ffn.w3(torch.nn.functional.silu(x @ w1.T + b1) * (x @ w2.T + b2))
        torch.testing.assert_close(block.ffn(x), ffn)
        assert block.fusion.squeeze.out_features == net.dim // 4
        for layer in (block.attention.qkv, block.attention.o, block.cross.q, block.cross.k, block.cross.o):
            assert layer.bias is None
        assert block.cross.scale == pytest.approx(1 / math.sqrt(net.n_profile))  # the code's sqrt(P)
    assert build(cross_scale="head_dim").blocks[0].cross.scale == pytest.approx(1 / math.sqrt(net.dim / 2))
    # profile tokens: 5 request-side fields (no user id by default) + user_click_count
    assert net.profile_fields == ["device_idx", "region_idx", "age_group_idx", "hour", "day_of_week"]
    assert net.profile_dense == ["user_click_count"] and net.n_profile == 6
    assert build(use_user_idx=True).profile_fields[0] == "user_idx"


# -- the sparse pattern (LightSUAN) ---------------------------------------------------------------------
def test_sparse_mask_has_the_expected_non_zero_count():
    # N = 6, window 2, dilation 3: distances 0 (6 pairs), 1 (5), 3 (3) -> 14 of the 21 causal pairs
    small = attention_pattern(6, window=2, dilation=3)
    assert int(small.sum()) == 14 == sparse_pattern_count(6, 2, 3)
    # LightSUAN's CPU student: N = 21 tokens, window 4, dilation 2: distances 0-3 (21+20+19+18 = 78)
    # plus the even ones 4..20 (17+15+13+11+9+7+5+3+1 = 81) = 159 of 231 causal pairs
    pattern = attention_pattern(21, window=4, dilation=2)
    assert int(pattern.sum()) == 159 == sparse_pattern_count(21, 4, 2)
    assert int(attention_pattern(21).sum()) == 21 * 22 // 2
    assert torch.all(pattern <= attention_pattern(21)) and torch.all(pattern.diagonal())
    net = build(LightSuanModel)  # grade 2 with L = 8 here: N = 9
    assert int(net.pattern.sum()) == sparse_pattern_count(N, 4, 2)
    # the candidate's row: the 4 most recent tokens, then every 2nd older one
    assert net.pattern[-1].nonzero().squeeze(1).tolist() == [0, 2, 4, 5, 6, 7, 8]


def test_length_groups_trim_without_changing_the_function():
    for attention in ("dense", "sparse"):
        net = build(attention=attention, n_layers=2)
        batch = make_batch(seed=3, rows=12)
        with torch.no_grad():
            trimmed = net.forward_full(batch)
            net.trim = False
            full = net.forward_full(batch)
        torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
    # L = 8: groups 0, 1..2, 3..4, 5..8, each trimmed to its longest history
    groups = length_groups(torch.tensor([0, 1, 2, 8, 5, 0, 3]), 8)
    assert [(r.tolist(), k) for r, k in groups] == [([0, 5], 0), ([1, 2], 2), ([6], 3), ([3, 4], 8)]


# -- the history encoded once -----------------------------------------------------------------------------
def one_request(batch, row: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """n candidates for the request of `row`: its user, context and history; random items/dense."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v[row : row + 1].expand(n, *v.shape[1:]).clone() for k, v in batch.items()}
    out["item_idx"] = torch.randint(2, CARDS["item_idx"], (n,), generator=g)
    out["category_idx"] = torch.randint(2, CARDS["category_idx"], (n,), generator=g)
    dense = torch.randn(n, 5, generator=g)
    dense[:, 3] = out["dense"][:, 3]  # user_click_count is the user's
    out["dense"] = dense
    return out


@pytest.mark.parametrize("model", [SuanModel, LightSuanModel])
@pytest.mark.parametrize("row", [0, 1, 2, 5])  # no history, one behaviour, full, random
def test_cached_history_scores_equal_the_full_forward(model, row):
    net = build(model, n_layers=2)
    batch = one_request(make_batch(seed=4), row, 50)
    with torch.no_grad():
        net.allow_shared = False
        full = net(batch)
        net.allow_shared = True
        shared = net(batch)
    assert net.history_encodings == 1
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)


def test_mixed_requests_and_training_take_the_full_path():
    net = build()
    batch = make_batch()
    with torch.no_grad():
        net(batch)
    net.train()
    net(batch)
    assert net.history_encodings == 0
    assert not build(gate_pool="all").one_request(one_request(batch, 2, 5))


# -- config, grades, spec, import weight ---------------------------------------------------------------------
def test_grades_scale_layers_width_and_length_together():
    values = [GRADES[g] for g in sorted(GRADES)]
    for lower, higher in zip(values, values[1:], strict=False):
        assert higher.n_layers >= lower.n_layers and higher.embedding_dim > lower.embedding_dim
        assert higher.max_seq_len > lower.max_seq_len
    assert SuanConfig().resolved() == GRADES[3]
    assert LightSuanConfig().resolved() == GRADES[2] and LightSuanConfig().attention == "sparse"
    custom = SuanConfig(grade=1, n_layers=3, tower_units=[8]).resolved()
    assert (custom.n_layers, custom.tower_units, custom.embedding_dim) == (3, (8,), GRADES[1].embedding_dim)
    for grade in GRADES:  # every grade builds (heads divide the width, with and without item vectors)
        g = GRADES[grade]
        assert (2 * g.embedding_dim) % g.n_heads == 0 and (3 * g.embedding_dim) % g.n_heads == 0


def test_feature_spec_reads_the_behaviour_ages():
    assert SuanModel().feature_spec(CARDS, None, L).sequence == ID_SEQUENCES + ("hist_age_s",)


@pytest.mark.parametrize(
    "bad",
    [
        {"grade": 0},
        {"grade": 6},
        {"n_layers": 0},
        {"attention": "local"},
        {"window": 0},
        {"gate_pool": "mean"},
        {"cross_scale": "x"},
        {"tower_units": []},
        {"dropout": 1.0},
        {"num_time_buckets": 0},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        SuanConfig(**bad)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="divisible"):
        build(embedding_dim=5, n_heads=4)


@pytest.mark.needs_entry_points
def test_discovery_imports_no_heavy_library():
    probe = (
        "import sys, json\n"
        "from importlib.metadata import entry_points\n"
        "eps = [e for e in entry_points(group='ctr_dagster.models') if e.name in ('suan', 'lightsuan')]\n"
        "classes = {e.name: e.load() for e in eps}\n"
        "assert {n: c.name for n, c in classes.items()} == {'suan': 'suan', 'lightsuan': 'lightsuan'}\n"
        "print(json.dumps([m for m in ('torch', 'numpy', 'pyarrow') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
    assert (
        LightSuanModel.role == "student" and LightSuanModel.teacher == "suan" and SuanModel.role == "teacher"
    )
