"""LightSUAN scores one request's candidates with the history encoded once (a KV cache per block).

The candidate is the sequence's last token, so its attention depends on the candidate; the history
prefix does not (causal mask and causal fusion pool), so it is encoded once and each candidate runs
only its last token through the blocks against the cached keys/values.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from ctr_dagster.contracts import FitContext
from ctr_dagster.modeling import features_only
from ctr_dagster.testing import make_training_table, training_cardinalities

from ctr_suan.model import LightSuanModel, SuanModel

FAST = {"epochs": 1, "batch_size": 256, "num_threads": 1, "log_every": 0}


@pytest.fixture(scope="module")
def data():
    table = make_training_table(3000, 0)
    split = table.column("split")
    return table, tuple(table.filter(pc.equal(split, s)) for s in ("train", "valid", "test"))


@pytest.fixture(scope="module", params=[LightSuanModel, SuanModel], ids=["lightsuan", "suan"])
def fitted(request, data):
    table, (train, valid, test) = data
    ctx = FitContext(seed=0, cardinalities=training_cardinalities(table), log=lambda s: None)
    return request.param(request.param.Config(**FAST)).fit(train, valid, ctx), features_only(test)


def user_with_history(test: pa.Table, at_least: int = 5) -> pa.Table:
    lengths = pc.list_value_length(test.column("hist_item_idx")).to_numpy()
    return test.slice(int(np.argmax(lengths >= at_least)), 1)


def candidates(test: pa.Table, n: int = 1000) -> pa.Table:
    rows = pa.array(np.arange(n) % test.num_rows)
    return test.select(["item_idx", "category_idx", "position", "price", "item_age_days", "treatment"]).take(
        rows
    )


def test_scoring_1000_candidates_encodes_the_history_once_and_equals_per_row_predict(fitted):
    model, test = fitted
    user, items = user_with_history(test), candidates(test)
    module = model.module
    before = module.history_encodings
    scores = model.score_candidates(user, items)
    assert module.history_encodings - before == 1
    assert scores.shape == (1000,) and np.all((scores > 0) & (scores < 1))
    # per-row predict: the same 1,000 rows of the request through the full forward (no sharing)
    request = model.request_table(user, items)
    assert request.num_rows == 1000
    assert request.column("user_idx").to_pylist() == user.column("user_idx").to_pylist() * 1000
    assert request.column("item_idx").equals(items.column("item_idx"))
    module.allow_shared = False
    try:
        per_row = model.predict(request)
        one_by_one = np.concatenate([model.predict(request.slice(i, 1)) for i in range(0, 1000, 97)])
    finally:
        module.allow_shared = True
    assert module.history_encodings - before == 1
    np.testing.assert_allclose(scores, per_row, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores[::97], one_by_one, atol=1e-5, rtol=0)
    # `predict` on a one-request table takes the shared path by itself: one more encoding
    np.testing.assert_allclose(model.predict(request), per_row, atol=1e-5, rtol=0)
    assert module.history_encodings - before == 2


def test_a_user_without_history_and_a_loaded_model(fitted, tmp_path):
    model, test = fitted
    lengths = pc.list_value_length(test.column("hist_item_idx")).to_numpy()
    user = test.slice(int(np.argmax(lengths == 0)), 1)
    items = candidates(test, 50)
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    np.testing.assert_allclose(
        loaded.score_candidates(user, items), model.score_candidates(user, items), atol=1e-6
    )
    loaded.module.allow_shared = False
    np.testing.assert_allclose(
        loaded.score_candidates(user, items), loaded.predict(loaded.request_table(user, items)), atol=1e-5
    )


def test_request_table_checks_its_inputs(fitted):
    model, test = fitted
    with pytest.raises(ValueError, match="exactly one row"):
        model.request_table(test.slice(0, 2), candidates(test, 3))
    with pytest.raises(ValueError, match="item_idx"):
        model.request_table(test.slice(0, 1), test.select(["price"]))
