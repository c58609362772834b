"""A plugin that cannot learn from the data at all is skipped and says why, never a failed run:
an uplift model on a CTR log without treated rows (most public logs) is the case that matters."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ctr_dagster.errors import NotApplicableError
from ctr_dagster.modeling import read_status, train_and_store
from ctr_dagster.registry import default_registry
from ctr_dagster.settings import Home
from ctr_dagster.testing import make_training_table
from ctr_dagster.uplift.lineage import evaluate_trained
from ctr_dagster.warehouse import Warehouse


def _without_treatment(table: pa.Table) -> pa.Table:
    i = table.schema.get_field_index("treatment")
    column = pa.array([0] * table.num_rows, type=table.schema.field("treatment").type)
    return table.set_column(i, table.schema.field("treatment"), column)


@pytest.fixture
def ctr_only_log(tmp_path):
    home = Home(tmp_path)
    wh = Warehouse(home.warehouse)
    wh.write("training_dataset", _without_treatment(make_training_table(1500, seed=3)))
    return home, wh


@pytest.mark.parametrize("name", ["s_learner", "ecup"])
def test_an_uplift_model_on_a_log_without_treatment_is_skipped_with_the_reason(ctr_only_log, name):
    home, wh = ctr_only_log
    registry = default_registry()
    plugin = registry.get("model", name)
    lines: list[str] = []
    with pytest.raises(NotApplicableError, match="treated arm"):
        train_and_store(plugin, {}, wh, home, log=lines.append)
    status = read_status(home, name)
    assert status["status"] == "skipped" and "arms [0]" in status["reason"]
    assert any("skipped" in line for line in lines)
    assert not (home.artifacts / name).exists()  # nothing stored
    doc, _ = evaluate_trained(wh, home, registry, log=lambda _: None)
    entry = next(u for u in doc["unranked"] if u["model"] == name)
    assert entry["status"] == "skipped" and "treated arm" in entry["error"]


def test_a_ctr_model_on_the_same_log_still_trains(ctr_only_log):
    home, wh = ctr_only_log
    plugin = default_registry().get("model", "baseline_lr")
    result = train_and_store(plugin, {}, wh, home, log=lambda _: None)
    assert result.skipped is None and read_status(home, "baseline_lr")["status"] == "ok"
