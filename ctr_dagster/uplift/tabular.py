"""A randomized experiment as a CSV file -> train / valid / test tables in the uplift contract's columns.

`read_experiment(path, treatment=COL, outcomes=[COL] or [COL, COL], control=VALUE)` reads any CSV with
a header, a treatment column and one or two binary outcomes (Criteo-uplift: treatment, visit,
conversion; Hillstrom: segment, visit, conversion; MT-LIFT: treatment 0-4, click, conversion):

* the first outcome becomes `label` (stage 1: click / visit), the second `conversion` (stage 2, taken
  as it is: an exposure-space outcome, 0 for a row that never reached stage 1);
* treatment values map to 0 = control and 1..K = the other values in sorted order (numerically when
  every value is a number, else as text). The control is `control` when given; else the value "0",
  else "control" (any case), else the most frequent value (ties: the first in sort order); the
  experiment says which rule chose it (`control_rule`);
* every other column is a feature: a column whose non-missing cells are at least 90 % numbers is
  numeric (float64), any other is text (a categorical for the plugins). Missing cells ("", NA, NaN,
  null, None) stay missing (null / NaN) and are not an error;
* a row is quarantined -- never silently dropped -- when its line cannot be split into the header's
  fields, its treatment is missing, an outcome is missing or not 0/1 (also accepted: 0.0/1.0,
  true/false), a numeric column's cell is not a number, or a cell is not UTF-8 text. Each quarantine
  record names the file, the 1-based data row (header excluded, as the importers count) and the
  column; rows in = kept + quarantined, always;
* columns named like the contract's own (label, conversion, treatment, split, click, impression_id)
  that are not the chosen treatment / outcomes are dropped (they would collide), and so are the
  `ignore`d ones: columns measured after the treatment (Criteo's exposure, Hillstrom's spend) leak
  the outcome and must be ignored by the caller;
* the kept rows are split at random (seeded), stratified by arm: 60 % train, 20 % valid, 20 % test.

A file that cannot be used at all (unreadable, no header, a named column missing, no row left, a
single treatment value, an unknown control value) raises `MalformedInputError` naming the file and
column.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctr_dagster.errors import MalformedInputError

#: Column names of the uplift contract; a feature of that name would collide (dropped, with a note).
RESERVED = ("label", "conversion", "treatment", "split", "click", "impression_id")
MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None")
TRUE, FALSE = ("1", "1.0", "true", "True", "TRUE"), ("0", "0.0", "false", "False", "FALSE")
_NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
#: Share of a column's non-missing cells that must be numbers for the column to be numeric.
NUMERIC_SHARE = 0.9
MAX_ARMS = 64
SPLIT = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class QuarantinedRow:
    """One row set aside: where it is (file, 1-based data row, column) and why."""

    file: str
    row: int | None
    column: str | None
    value: str | None
    reason: str
    kind: str = ""  # the reason without the value: what the summary counts

    def __str__(self) -> str:
        where = f"file {self.file}, row {self.row if self.row is not None else '?'}"
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.reason}"


@dataclass
class Experiment:
    """The experiment's splits (uplift contract columns + features), its arms and its quarantine."""

    file: Path
    train: pa.Table
    valid: pa.Table
    test: pa.Table
    #: 0 -> the control value, k -> the k-th other treatment value (as written in the file)
    arms: dict[int, str]
    control_rule: str
    outcomes: list[str]  # the file's outcome columns: [stage 1] or [stage 1, stage 2]
    features: dict[str, str]  # feature column -> "numeric" | "text"
    rows_read: int
    quarantine: list[QuarantinedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rows_kept(self) -> int:
        return self.train.num_rows + self.valid.num_rows + self.test.num_rows

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined rows per (column: reason kind), for the summary."""
        counts: dict[str, int] = {}
        for q in self.quarantine:
            key = f"{q.column or '-'}: {q.kind or q.reason}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def write_quarantine(self, path: Path) -> Path:
        """The quarantined rows as CSV (file, row, column, value, reason)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "row", "column", "value", "reason"])
            for q in self.quarantine:
                writer.writerow([q.file, q.row, q.column or "", q.value or "", q.reason])
        return path

    def summary(self, max_rows: int = 20) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_quarantined": len(self.quarantine),
            "split_rows": {
                "train": self.train.num_rows,
                "valid": self.valid.num_rows,
                "test": self.test.num_rows,
            },
            "arms": {str(k): v for k, v in self.arms.items()},
            "control_rule": self.control_rule,
            "outcomes": {
                "label": self.outcomes[0],
                **({"conversion": self.outcomes[1]} if len(self.outcomes) > 1 else {}),
            },
            "features": dict(self.features),
            "quarantine_counts": self.quarantine_counts(),
            "quarantine": [vars(q) for q in self.quarantine[:max_rows]],
            "notes": list(self.notes),
        }


# -- reading ---------------------------------------------------------------------------------------------
def _read_columns(path: Path, columns: list[str]) -> tuple[dict[str, pa.ChunkedArray], np.ndarray, list]:
    """Every column as binary cells, the 1-based data row numbers, and the lines that did not split."""
    from ctr_dagster.importers.mapping import CsvOptions
    from ctr_dagster.importers.readers import iter_csv

    options = CsvOptions(null_values=())
    chunks: dict[str, list[pa.Array]] = {c: [] for c in columns}
    rows, rejected = [], []
    for batch in iter_csv(path, columns, options):
        for c in columns:
            chunks[c].append(batch.data.column(c))
        rows.append(batch.rows)
        rejected.extend(batch.rejected)
    data = {c: pa.chunked_array(v, type=pa.binary()) for c, v in chunks.items()}
    return data, (np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)), rejected


def _text(values: pa.ChunkedArray) -> tuple[list[str | None], np.ndarray]:
    """Cells as text (None for null) and a mask of the cells that are not UTF-8."""
    try:
        return pc.cast(values, pa.string()).to_pylist(), np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:
        out, bad = [], np.zeros(len(values), dtype=bool)
        for i, cell in enumerate(values.to_pylist()):
            try:
                out.append(None if cell is None else cell.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
                bad[i] = True
        return out, bad


def _numbers(cells: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing, mask missing, mask unparsable) of string cells."""
    stripped = pc.utf8_trim_whitespace(cells)
    missing = pc.fill_null(pc.is_in(stripped, value_set=pa.array(MISSING)), True)
    number = pc.fill_null(pc.match_substring_regex(stripped, _NUMBER), False)
    values = pc.cast(pc.if_else(number, stripped, pa.scalar(None, pa.string())), pa.float64())
    return (
        values.to_numpy(zero_copy_only=False).astype(np.float64),
        np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool),
        ~np.asarray(number.to_numpy(zero_copy_only=False), dtype=bool)
        & ~np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool),
    )


def _sort_key(values: Sequence[str]):
    numeric = all(re.match(_NUMBER, v) for v in values)
    return (lambda v: (float(v), v)) if numeric else (lambda v: v)


def _choose_control(values: list[str], counts: dict[str, int], control: str | None, path: Path, column: str):
    if control is not None:
        if control not in counts:
            raise MalformedInputError(
                path, None, column, f"control value {control!r} does not occur; values: {values}"
            )
        return control, f"given (--control {control!r})"
    if "0" in counts:
        return "0", "the value '0' (default)"
    for v in values:
        if v.lower() == "control":
            return v, f"the value {v!r} (default)"
    top = max(counts.values())
    chosen = next(v for v in values if counts[v] == top)
    return chosen, f"the most frequent value {chosen!r} ({top} rows; no '0' or 'control' value)"


def read_experiment(
    path: Path,
    *,
    treatment: str,
    outcomes: Sequence[str],
    control: str | None = None,
    ignore: Sequence[str] = (),
    seed: int = 0,
    split: tuple[float, float, float] = SPLIT,
) -> Experiment:
    """Read, check and split one experiment CSV (see the module docstring)."""
    from ctr_dagster.importers.mapping import CsvOptions
    from ctr_dagster.importers.readers import csv_header

    path = Path(path)
    outcomes = list(outcomes)
    if not 1 <= len(outcomes) <= 2:
        raise ValueError(f"give one or two outcome columns (stage 1, then stage 2), got {outcomes}")
    if len(set(outcomes) | {treatment}) != len(outcomes) + 1:
        raise ValueError(f"treatment {treatment!r} and outcomes {outcomes} must be different columns")
    header = csv_header(path, CsvOptions())
    for column in [treatment, *outcomes, *ignore]:
        if column not in header:
            raise MalformedInputError(path, None, column, f"no such column; the header has {header}")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise MalformedInputError(path, None, dup[0], f"duplicate column name(s) {dup} in the header")
    notes = []
    dropped = [h for h in header if h in RESERVED and h not in (treatment, *outcomes)]
    if dropped:
        notes.append(f"dropped column(s) {dropped}: named like the uplift contract's own columns")
    if ignore:
        notes.append(f"ignored column(s) {list(ignore)} (--ignore)")
    features = [h for h in header if h not in (treatment, *outcomes, *ignore, *dropped)]
    data, rows, rejected = _read_columns(path, [treatment, *outcomes, *features])
    n = len(rows)
    quarantine = [
        QuarantinedRow(
            str(path), r.row, None, r.text[:200], r.message, "line does not split into the header's fields"
        )
        for r in rejected
    ]
    bad = np.zeros(n, dtype=bool)

    def reject(mask: np.ndarray, column: str, cells: list, kind: str, detail: str = "") -> None:
        """Quarantine the rows of `mask` not yet quarantined (one record per row: its first problem)."""
        for i in np.flatnonzero(mask & ~bad):
            value = cells[i] if cells[i] is None or len(cells[i]) <= 200 else cells[i][:200]
            reason = kind + detail.format(v=value)
            quarantine.append(QuarantinedRow(str(path), int(rows[i]), column, value, reason, kind))
        bad[mask] = True

    text: dict[str, list[str | None]] = {}
    for column in [treatment, *outcomes, *features]:
        cells, not_utf8 = _text(data[column])
        reject(not_utf8, column, [None] * n, "not UTF-8 text")
        text[column] = cells

    arm_cells = [None if c is None else c.strip() for c in text[treatment]]
    reject(np.array([c is None or c in MISSING for c in arm_cells], dtype=bool), treatment, arm_cells,
           "missing treatment")  # fmt: skip
    outcome_values = {}
    for column in outcomes:
        cells = [None if c is None else c.strip() for c in text[column]]
        ones = np.array([c in TRUE for c in cells], dtype=bool)
        zeros = np.array([c in FALSE for c in cells], dtype=bool)
        missing = np.array([c is None or c in MISSING for c in cells], dtype=bool)
        reject(missing, column, cells, "missing outcome")
        reject(~ones & ~zeros & ~missing, column, cells, "outcome must be 0 or 1", ", got {v!r}")
        outcome_values[column] = ones.astype(np.int8)

    kinds: dict[str, str] = {}
    numeric: dict[str, np.ndarray] = {}
    for column in features:
        cells = pa.array(text[column], pa.string())
        values, missing, unparsable = _numbers(cells)
        present = int((~missing).sum())
        if present and (present - int(unparsable.sum())) / present >= NUMERIC_SHARE:
            kinds[column] = "numeric"
            reject(unparsable, column, text[column], "not a number", ": {v!r}")
            numeric[column] = values
        else:
            kinds[column] = "text"

    keep = np.flatnonzero(~bad)
    if not len(keep):
        raise MalformedInputError(path, None, None, f"no usable row: all {n} rows quarantined")
    kept_arms = [arm_cells[i] for i in keep]
    counts: dict[str, int] = {}
    for v in kept_arms:
        counts[v] = counts.get(v, 0) + 1
    values = sorted(counts, key=_sort_key(list(counts)))
    if len(values) < 2:
        raise MalformedInputError(
            path, None, treatment, f"a single treatment value {values}: nothing to compare"
        )
    if len(values) > MAX_ARMS + 1:
        raise MalformedInputError(
            path, None, treatment, f"{len(values)} distinct treatment values: is this the treatment column?"
        )
    control_value, rule = _choose_control(values, counts, control, path, treatment)
    arms = {0: control_value, **{k: v for k, v in enumerate((v for v in values if v != control_value), 1)}}
    code = {v: k for k, v in arms.items()}
    arm_of = np.array([code[v] for v in kept_arms], dtype=np.int8)

    columns: dict[str, pa.Array] = {
        "label": pa.array(outcome_values[outcomes[0]][keep], pa.int8()),
    }
    if len(outcomes) > 1:
        columns["conversion"] = pa.array(outcome_values[outcomes[1]][keep], pa.int8())
    columns["treatment"] = pa.array(arm_of, pa.int8())
    for column in features:
        if kinds[column] == "numeric":
            columns[column] = pa.array(numeric[column][keep], pa.float64())
        else:
            cells = [text[column][i] for i in keep]
            columns[column] = pa.array(
                [None if c is None or c.strip() in MISSING else c for c in cells], pa.string()
            )
    table = pa.table(columns)
    train, valid, test = _split(table, arm_of, seed, split)
    return Experiment(
        file=path,
        train=train,
        valid=valid,
        test=test,
        arms=arms,
        control_rule=rule,
        outcomes=outcomes,
        features=kinds,
        rows_read=n + len(rejected),
        quarantine=sorted(
            quarantine, key=lambda q: (q.row if q.row is not None else math.inf, q.column or "")
        ),
        notes=notes,
    )


def _split(
    table: pa.Table, arm: np.ndarray, seed: int, shares: tuple[float, float, float]
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Seeded random split, stratified by arm (each arm's rows cut by `shares`); rows keep file order."""
    if len(shares) != 3 or min(shares) < 0 or not math.isclose(sum(shares), 1.0):
        raise ValueError(f"split shares must be three non-negative numbers summing to 1, got {shares}")
    rng = np.random.default_rng(seed)
    part = np.zeros(len(arm), dtype=np.int8)
    for k in np.unique(arm):
        rows = rng.permutation(np.flatnonzero(arm == k))
        n_train = round(shares[0] * len(rows))
        n_valid = round(shares[1] * len(rows))
        part[rows[n_train : n_train + n_valid]] = 1
        part[rows[n_train + n_valid :]] = 2
    return tuple(table.take(pa.array(np.flatnonzero(part == p))) for p in range(3))  # type: ignore[return-value]
