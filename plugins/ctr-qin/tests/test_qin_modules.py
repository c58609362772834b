"""QIN's modules against their definitions: ASTA's sparse weights, the packed attention against the
textbook form, the quadratic layer, the masked tag mean, and the parameter formula (paper scale and
the real module)."""

import math

import pytest
import torch
from ctr_dagster.training.spec import FeatureSpec

from ctr_qin.model import QinConfig, parameter_count, parameter_count_for
from ctr_qin.modules import Asta, ItemTokens, QinNet, QuadraticLayer, QuadraticNetwork

#: The paper's MicroLens-1M run (MODELS.md section 1; checkpoints/MicroLens_1M_x1/*.log): d = 128,
#: item ids 91,718 rows, item_tags 11,740 rows, 128-d item_emb_d128, likes_level / views_level 11 rows.
MICROLENS = {
    "item_rows": 91_718,
    "tag_rows": 11_740,
    "item_vector_dim": 128,
    "context_rows": [11, 11],
    "embedding_dim": 128,
    "num_layers": 4,
}


def padded_history(batch: int = 6, length: int = 7, dim: int = 12, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, 3, 7, 5, 2])[:batch]
    mask = torch.arange(length).unsqueeze(0) >= (length - lengths).unsqueeze(1)  # right-aligned
    history = torch.randn(batch, length, dim, generator=gen) * mask.unsqueeze(-1)
    return torch.randn(batch, dim, generator=gen), history, mask


def test_asta_weights_are_relu_of_masked_scaled_scores():
    torch.manual_seed(0)
    target, history, mask = padded_history()
    asta = Asta(12, 24)
    out, weights = asta.reference(target, history, mask)
    scores = torch.einsum("ba,bla->bl", asta.w_q(target), asta.w_k(history)) / math.sqrt(24)
    assert asta.attention_dim == 24 and torch.all(weights >= 0)
    assert torch.all(weights[~mask] == 0)  # padding: exactly 0
    negative = mask & (scores < 0)
    positive = mask & (scores > 0)
    assert negative.any() and positive.any()
    assert torch.all(weights[negative] == 0)  # sparse: negative scores are cut to exactly 0
    torch.testing.assert_close(weights[positive], scores[positive])  # no softmax, no renormalisation
    expected = asta.w_o(torch.einsum("bl,bla->ba", weights, asta.w_v(history))) + target
    torch.testing.assert_close(out, expected)
    # a row without history gets the target back unchanged (the residual after W_o)
    torch.testing.assert_close(out[0], target[0])


def test_asta_padding_contents_do_not_matter():
    torch.manual_seed(1)
    target, history, mask = padded_history()
    asta = Asta(12, 24)
    noisy = history + 5.0 * torch.randn_like(history) * (~mask).unsqueeze(-1)
    torch.testing.assert_close(asta.reference(target, noisy, mask), asta.reference(target, history, mask))


def test_packed_asta_equals_the_textbook_form():
    torch.manual_seed(2)
    target, history, mask = padded_history()
    asta = Asta(12, 24)
    rows, slots = mask.nonzero(as_tuple=True)
    out, weights = asta.forward_packed(target, history[rows, slots], rows)
    ref_out, ref_weights = asta.reference(target, history, mask)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, ref_weights[rows, slots], rtol=1e-5, atol=1e-6)


def test_quadratic_layer_is_x_times_the_sum_of_row_blocks():
    torch.manual_seed(3)
    x = torch.randn(5, 6)
    layer = QuadraticLayer(6, num_row=3, dropout=0.0).eval()
    blocks = layer.linear(x).view(5, 3, 6)
    torch.testing.assert_close(layer(x), torch.einsum("bd,brd->bd", x, blocks))  # summed-blocks path
    with_dropout = QuadraticLayer(6, num_row=3, dropout=0.5)
    with_dropout.load_state_dict(layer.state_dict())
    torch.testing.assert_close(with_dropout.eval()(x), layer(x))  # scoring: dropout off, same function
    mlp = QuadraticLayer(6, num_row=3, dropout=0.0, quadratic=False).eval()
    mlp.load_state_dict(layer.state_dict())
    torch.testing.assert_close(mlp(x), blocks.sum(1))  # the ablation drops only the product with x


def test_qnn_layer_is_residual_dropout_prelu_bn():
    torch.manual_seed(4)
    net = QuadraticNetwork(6, num_layers=2, num_row=2, dropout=0.1).eval()
    x = torch.randn(8, 6)
    expected = x
    for layer, norm, act in zip(net.layers, net.norms, net.activations, strict=True):
        expected = expected + act(norm(layer(expected)))  # dropout is the identity in eval
    torch.testing.assert_close(net(x), net.fc(expected).squeeze(1))
    assert all(act.weight.numel() == 1 for act in net.activations)  # one PReLU slope per layer


def test_quadratic_layer_dropout_acts_on_h_in_training():
    torch.manual_seed(5)
    layer = QuadraticLayer(4, num_row=2, dropout=0.5).train()
    x = torch.ones(1000, 4)
    with torch.no_grad():
        layer.linear.weight.zero_()
        layer.linear.bias.fill_(1.0)  # H = 1 everywhere before dropout
    out = layer(x)  # x * (H_1 + H_2), each H_r dropped (0) or scaled (2) independently
    assert set(out.unique().tolist()) == {0.0, 2.0, 4.0}


def test_tag_mean_skips_padding_and_items_without_tags():
    spec = FeatureSpec(categorical={"item_idx": 5, "category_idx": 3}, item_tags=[3, 6])
    tags = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 2, 0], [3, 0, 0], [4, 5, 1]])
    tokens = ItemTokens(spec, dim=4, init_std=1.0, item_tags=tags, use_category=False)
    table = tokens.tags.weight.detach()
    mean = tokens.mean_tags(torch.tensor([2, 3, 4, 1]))
    torch.testing.assert_close(mean[0], (table[1] + table[2]) / 2)
    torch.testing.assert_close(mean[1], table[3])
    torch.testing.assert_close(mean[2], (table[4] + table[5] + table[1]) / 3)
    assert torch.all(mean[3] == 0)  # no tags: zeros, not NaN
    assert tokens.dim == 8 and "item_tags" in tokens.state_dict()  # a persistent buffer


@pytest.mark.parametrize(("rows", "expected"), [(4, 31_244_293), (3, 27_045_893)])
def test_parameter_count_matches_the_papers_microlens_log(rows, expected):
    assert parameter_count(num_row=rows, **MICROLENS) == expected


def _spec(item_rows, tag_rows, vector_dim, context, dense, category_rows=None):
    categorical = {
        "item_idx": item_rows,
        **({"category_idx": category_rows} if category_rows else {}),
        **context,
    }
    return FeatureSpec(
        categorical=categorical,
        dense=dense,
        sequence=("hist_item_idx",) + (("hist_category_idx",) if category_rows else ()),
        item_embedding_dim=vector_dim,
        item_tags=[5, tag_rows] if tag_rows else None,
    )


@pytest.mark.parametrize(
    ("spec", "overrides"),
    [
        # the paper's structure (no category, no dense), small
        (_spec(50, 30, 12, {"likes_level": 11, "views_level": 11}, ()), {"use_category": False}),
        # the engine's fields, category on, R = 3, 3 layers, attention width set
        (
            _spec(60, 20, 8, {"user_idx": 40, "device_idx": 5, "hour": 24}, ("price", "position"), 9),
            {"num_row": 3, "num_layers": 3, "attention_dim": 10, "embedding_dim": 6},
        ),
        # no tags, no vectors, user id embedded, no batch norm, the MLP ablation
        (
            _spec(30, None, None, {"user_idx": 40, "region_idx": 7}, ("price",), 4),
            {"use_user_idx": True, "batch_norm": False, "interaction_layers": "mlp"},
        ),
    ],
)
def test_parameter_formula_equals_the_real_module(spec, overrides):
    config = QinConfig(embedding_dim=overrides.pop("embedding_dim", 8), **overrides)
    net = QinNet(
        spec,
        config,
        torch.zeros(spec.categorical["item_idx"], spec.item_embedding_dim)
        if spec.item_embedding_dim
        else None,
        torch.zeros(spec.categorical["item_idx"], 5, dtype=torch.long) if spec.item_tags else None,
    )
    assert sum(p.numel() for p in net.parameters()) == parameter_count_for(spec, config)


def test_paper_scale_formula_equals_a_module_of_the_same_structure():
    """The MicroLens formula call, with every size divided down, counted on the real module: the
    formula is the code's, not a separate derivation that happens to give the logged figure."""
    small = dict(MICROLENS, item_rows=917, tag_rows=117, item_vector_dim=16, embedding_dim=8)
    spec = _spec(917, 117, 16, {"likes_level": 11, "views_level": 11}, ())
    config = QinConfig(embedding_dim=8, num_row=4, num_layers=4, use_category=False)
    net = QinNet(spec, config, torch.zeros(917, 16), torch.zeros(917, 5, dtype=torch.long))
    assert sum(p.numel() for p in net.parameters()) == parameter_count(num_row=4, **small)
    assert net.width == 2 * 8 + 2 * 3 * 8 and net.attention.attention_dim == 2 * 3 * 8


def _batch(spec, rows, length, seed, shared):
    gen = torch.Generator().manual_seed(seed)
    size = 1 if shared else rows
    lengths = torch.randint(0, length + 1, (size,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) >= (length - lengths).unsqueeze(1)
    hist_items = torch.randint(2, spec.categorical["item_idx"], (size, length), generator=gen) * mask
    hist_cats = torch.randint(2, spec.categorical["category_idx"], (size, length), generator=gen) * mask
    batch = {
        "item_idx": torch.randint(2, spec.categorical["item_idx"], (rows,), generator=gen),
        "category_idx": torch.randint(2, spec.categorical["category_idx"], (rows,), generator=gen),
        "hist_item_idx": hist_items.expand(rows, -1),
        "hist_category_idx": hist_cats.expand(rows, -1),
        "hist_mask": mask.expand(rows, -1),
        "dense": torch.randn(rows, len(spec.dense), generator=gen),
    }
    for name, size_ in spec.categorical.items():
        if name not in batch:
            batch[name] = torch.randint(0, size_, (rows,), generator=gen)
    return batch


def test_the_network_equals_its_textbook_form_on_every_path():
    """QinNet's packed path (training, general scoring) and its one-history path (one user's
    candidates) both equal ASTA's textbook form over the padded (B, L) history."""
    spec = _spec(40, 9, 6, {"device_idx": 5, "hour": 24}, ("price", "position"), 7)
    config = QinConfig(embedding_dim=4)
    gen = torch.Generator().manual_seed(0)
    tags = torch.randint(0, 9, (40, 5), generator=gen)
    net = QinNet(spec, config, torch.randn(40, 6, generator=gen), tags).eval()
    for shared in (False, True):
        batch = _batch(spec, 16, 6, seed=int(shared), shared=shared)
        assert net._one_history(batch) is shared
        target = net.tokens(batch["item_idx"], batch["category_idx"])
        history = net.tokens(batch["hist_item_idx"].reshape(-1), batch["hist_category_idx"].reshape(-1))
        interest, _ = net.attention.reference(target, history.view(16, 6, -1), batch["hist_mask"])
        parts = [net.context[name](batch[name]) for name in net.context_fields]
        expected = net.qnn(torch.cat([*parts, batch["dense"], target, interest], dim=1))
        with torch.no_grad():
            torch.testing.assert_close(net(batch), expected, rtol=1e-5, atol=1e-5)
