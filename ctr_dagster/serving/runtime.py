"""The serving runtime: load a bundle, check it against its manifest, score one user's candidates.

Every bundle carries a copy of this file as ``score.py``, so the bundle alone is enough to serve::

    python DIR/score.py --request request.json [--json]        # a request file (one object or a list)
    >>> import sys; sys.path.insert(0, "DIR"); import score
    >>> score.load("DIR").score({"user": {...}, "candidates": [...]})   # float64[n candidates]

Standalone on purpose: it imports the standard library and numpy, and onnxruntime, torch or lightgbm
only when the bundle's model needs them. It never imports ctr_dagster, Dagster or plugin code (a serving host
need not install them; the parity tests run it with those imports blocked), and nothing in a bundle
is unpickled: vocabularies and encodings are JSON, arrays ``.npy`` read with ``allow_pickle=False``,
the network a torch.export program (raw weights + graph JSON, saved without sample inputs) and its
ONNX copy (protobuf), a LightGBM booster its own text format.

What a bundle holds (written by `ctr_dagster.serving.export`):

* ``manifest.json``: format and version, the model (name, plugin, task), what it came from (the
  artifact), library versions, the request conventions, and the sha256 of every other file.
  `load` refuses a bundle whose files differ from it (a changed, missing or added file) before any
  of them is read.
* ``vocab/<field>.json``: raw id -> index for user, item, category, device, region, age group
  (0 = padding, 1 = out of vocabulary: an id the training data never had).
* ``model/``: what the model's own export wrote, and how to run it (``manifest["model"]["kind"]``):
  ``torch_export`` (the network as a torch.export program, and as ONNX where the export could
  convert it, + the batch encoding as JSON: the engine's `BatchEncoder` for torch plugins;
  optionally a one-request program, run on rows that share one user, e.g. SUAN's history encoded
  once per request; `--engine` picks ONNX Runtime or torch, by default the one the export timed
  faster) or ``lightgbm`` (a booster in
  LightGBM's text format + a feature program: a numpy-only Python file the plugin ships with the
  bundle, run on the rows).
* ``score.py``: this file.

Request (JSON; one user, many candidates; the README's "Serving bundle" section)::

    {"user": {"user_id": "u17", "device": "mobile", "region": "north", "age_group": "3",
              "hour": 14, "day_of_week": 2,            # the request's time (UTC), 0 = Monday
              "user_click_count": 12,                  # optional: clicks before the request (default: history length)
              "is_new_user": false, "treatment": 0,    # optional (defaults shown; a candidate may set its own treatment)
              "history": [{"item_id": "i9", "category": "c2", "age_s": 5400.0}, ...]},  # oldest first
     "candidates": [{"item_id": "i100", "category": "c2", "price": 19.9, "item_age_days": 12.0,
                     "position": 0, "is_new_item": false}, ...]}          # position: default = list order

or, for a large slate, the same candidates as one list per field (the columnar form; the same
defaults, and an unknown field is refused)::

     "candidates": {"item_id": ["i100", "i7", ...], "category": ["c2", "c5", ...],
                    "price": [19.9, 4.5, ...], "item_age_days": [12.0, 3.0, ...]}

Ids go through the bundle's vocabularies (unknown or null -> out of vocabulary). Numbers are cast to
the training table's types (``price`` float32, ``hour`` int8, ...), so a request is scored on exactly
the values a model trained on. The history keeps its most recent ``history_capacity`` clicks (the
training dataset's sequence length); ``age_s`` is seconds before the request (-1: unknown).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_FILE = "manifest.json"
RUNTIME_FILE = "score.py"
BUNDLE_FORMAT = "ctr-serving-bundle"
FORMAT_VERSION = 1
#: Vocabulary conventions of the training data (ctr_dagster.vocab): 0 = padding, 1 = out of vocabulary.
PAD, OOV = 0, 1
#: Request field -> vocabulary (bundle file ``vocab/<vocabulary>.json``) -> index column.
ID_FIELDS = {
    "user_id": ("user", "user_idx"),
    "device": ("device", "device_idx"),
    "region": ("region", "region_idx"),
    "age_group": ("age_group", "age_group_idx"),
    "item_id": ("item", "item_idx"),
    "category": ("category", "category_idx"),
}
VOCABULARIES = ("user", "item", "category", "device", "region", "age_group")
#: The training table's numpy types of every column a model reads (ctr_dagster.schemas.TRAINING).
DTYPES: dict[str, Any] = {
    "user_idx": np.int32,
    "item_idx": np.int32,
    "category_idx": np.int32,
    "device_idx": np.int32,
    "region_idx": np.int32,
    "age_group_idx": np.int32,
    "position": np.int16,
    "hour": np.int8,
    "day_of_week": np.int8,
    "price": np.float32,
    "item_age_days": np.float32,
    "user_click_count": np.int32,
    "is_new_user": np.bool_,
    "is_new_item": np.bool_,
    "treatment": np.int8,
    "hist_item_idx": np.int32,
    "hist_category_idx": np.int32,
    "hist_age_s": np.float32,
    "hist_rel_pos": np.int32,
}
LIST_COLUMNS = ("hist_item_idx", "hist_category_idx", "hist_age_s", "hist_rel_pos")
#: The user-side columns: equal on every row of one request (its user, context and history). A
#: ``torch_export`` bundle's one-request program may read them from row 0 (`shares_one_user`).
USER_COLUMNS = (
    "user_idx",
    "device_idx",
    "region_idx",
    "age_group_idx",
    "hour",
    "day_of_week",
    "user_click_count",
    "is_new_user",
    *LIST_COLUMNS,
)
#: Unknown click time in a history entry (as the training data marks a log's own sequences).
UNKNOWN_AGE_S = -1.0


class BundleError(ValueError):
    """A bundle that is incomplete, altered or unreadable, or a request it cannot score (says which)."""


# -- integrity ---------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(directory: Path) -> list[str]:
    """Every file of the bundle but the manifest, as sorted POSIX paths relative to it."""
    directory = Path(directory)
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE and "__pycache__" not in p.parts
    )


def verify(directory: Path) -> dict[str, Any]:
    """The manifest, once every file matches its sha256 and no file is missing or unlisted.

    Checked before anything is loaded: a changed vocabulary or program fails here, by name, instead
    of scoring silently differently (or running a tampered feature program)."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not a serving bundle: it has no {MANIFEST_FILE}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}; this "
            f"runtime reads {BUNDLE_FORMAT!r} version {FORMAT_VERSION}"
        )
    listed: dict[str, str] = manifest.get("files") or {}
    problems = []
    for name, expected in sorted(listed.items()):
        file = directory / name
        if not file.is_file():
            problems.append(f"{name} is missing")
            continue
        found = sha256_file(file)
        if found != expected:
            problems.append(
                f"{name} does not match its manifest hash (sha256 {found[:16]}..., manifest "
                f"{expected[:16]}...): it was changed after export"
            )
    extra = sorted(set(bundle_files(directory)) - set(listed))
    problems += [f"{name} is not listed in the manifest" for name in extra]
    if problems:
        raise BundleError(f"bundle {directory} failed its integrity check: " + "; ".join(problems))
    return manifest


# -- rows: the index-space columns every model reads ---------------------------------------------------
class Rows:
    """n rows of the training table's model columns (ids as indices), what every bundle model scores.

    `scalars`: column -> array (n,); `lists`: list column -> (flat values, lengths (n,)), each row's
    list oldest first. Feature programs read them through `scalar`, `values`, `lengths`, `parents`.
    `one_user`: set by `parse_request`, which writes one user's columns on every row by construction,
    so `shares_one_user` need not compare them (~0.2 ms of a 1,000-candidate request).
    """

    def __init__(
        self,
        n: int,
        scalars: dict[str, np.ndarray],
        lists: dict[str, tuple[np.ndarray, np.ndarray]],
        one_user: bool = False,
    ):
        self.n = int(n)
        self.scalars = scalars
        self.lists = lists
        self.one_user = one_user

    def _need(self, name: str, store: dict) -> Any:
        if name not in store:
            raise BundleError(f"the model reads column {name!r}, which the rows do not have")
        return store[name]

    def scalar(self, name: str) -> np.ndarray:
        return self._need(name, self.scalars)

    def values(self, name: str) -> np.ndarray:
        return self._need(name, self.lists)[0]

    def lengths(self, name: str) -> np.ndarray:
        return self._need(name, self.lists)[1]

    def parents(self, name: str) -> np.ndarray:
        """The row of each flat value of a list column."""
        lengths = self.lengths(name)
        return np.repeat(np.arange(self.n, dtype=np.int64), lengths)


def shares_one_user(rows: Rows) -> bool:
    """Whether every row holds row 0's user-side columns (`USER_COLUMNS`; every parsed request does):
    then a one-request program, which reads them from row 0, scores the rows as the general one."""
    if rows.n == 0:
        return False
    if rows.one_user:
        return True
    for name in USER_COLUMNS:
        if name in rows.scalars:
            column = rows.scalars[name]
            if not np.array_equal(column, np.broadcast_to(column[:1], column.shape)):
                return False
        elif name in rows.lists:
            values, lengths = rows.lists[name]
            k = int(lengths[0])
            if np.any(lengths != k) or len(values) != rows.n * k:
                return False
            if k and not np.array_equal(values.reshape(rows.n, k), np.broadcast_to(values[:k], (rows.n, k))):
                return False
    return True


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _value(obj: dict, key: str, path: str, default: Any = ...) -> Any:
    if key in obj:
        return obj[key]
    if default is ...:
        raise BundleError(f"request: {_where(path, key)} is missing")
    return default


def _as_number(value: Any, where: str) -> float | int:
    """`value` if it is a finite JSON number (not a bool), else `BundleError` naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BundleError(f"request: {where} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise BundleError(f"request: {where} must be finite, got {value!r}")
    return value


def _as_flag(value: Any, where: str) -> bool:
    """`value` as a bool if it is true / false (or an int), else `BundleError` naming `where`."""
    if not isinstance(value, bool | int):
        raise BundleError(f"request: {where} must be true or false, got {value!r}")
    return bool(value)


def _number(obj: dict, key: str, path: str, default: Any = ...) -> float | int | bool:
    return _as_number(_value(obj, key, path, default), _where(path, key))


def _flag(obj: dict, key: str, path: str, default: bool) -> bool:
    return _as_flag(_value(obj, key, path, default), _where(path, key))


class Vocabularies:
    """Raw id -> index per vocabulary (the bundle's ``vocab/*.json``); unknown and null ids -> OOV."""

    def __init__(self, tables: dict[str, dict[str, int]]):
        self.tables = tables

    @classmethod
    def load(cls, directory: Path, files: dict[str, str]) -> Vocabularies:
        tables = {}
        for name in VOCABULARIES:
            if name not in files:
                raise BundleError(f"bundle {directory}: the manifest names no {name} vocabulary")
            tables[name] = json.loads((Path(directory) / files[name]).read_text(encoding="utf-8"))
        return cls(tables)

    def index(self, vocabulary: str, key: Any) -> int:
        if key is None:
            return OOV
        return int(self.tables[vocabulary].get(str(key), OOV))

    def indices(self, vocabulary: str, keys: list[Any]) -> np.ndarray:
        """`index` of every key, as int64 (one dict lookup per key; all-string keys, the usual
        request, in one C-level pass)."""
        get = self.tables[vocabulary].get
        if set(map(type, keys)) <= {str}:
            return np.fromiter(map(get, keys, repeat(OOV)), dtype=np.int64, count=len(keys))
        found = (OOV if k is None else get(k if type(k) is str else str(k), OOV) for k in keys)
        return np.fromiter(found, dtype=np.int64, count=len(keys))


def parse_request(
    request: dict[str, Any], vocabularies: Vocabularies, history_capacity: int | None
) -> tuple[Rows, list[Any]]:
    """(rows, candidate item ids) of one request: the user's fields on every candidate's row."""
    if not isinstance(request, dict):
        raise BundleError(
            f"request must be a JSON object with 'user' and 'candidates', got {type(request).__name__}"
        )
    user = _value(request, "user", "")
    candidates = _value(request, "candidates", "")
    if not isinstance(user, dict):
        raise BundleError("request: user must be an object")
    if not (isinstance(candidates, list | dict) and candidates):
        raise BundleError(
            "request: candidates must be a non-empty list of objects, or an object of equal-length "
            "lists (one per field)"
        )
    history = _value(user, "history", "user", [])
    if not isinstance(history, list):
        raise BundleError("request: user.history must be a list (oldest click first)")

    hist_items, hist_cats, hist_ages = [], [], []
    for i, click in enumerate(history):
        where = f"user.history[{i}]"
        if not isinstance(click, dict):
            raise BundleError(f"request: {where} must be an object")
        hist_items.append(vocabularies.index("item", _value(click, "item_id", where)))
        hist_cats.append(vocabularies.index("category", _value(click, "category", where)))
        hist_ages.append(float(_number(click, "age_s", where, UNKNOWN_AGE_S)))
    clicks = len(history)
    if history_capacity is not None:
        keep = max(0, min(clicks, int(history_capacity)))
        hist_items, hist_cats, hist_ages = (
            hist_items[clicks - keep :],
            hist_cats[clicks - keep :],
            hist_ages[clicks - keep :],
        )
    length = len(hist_items)

    request_values = {
        "user_idx": vocabularies.index("user", _value(user, "user_id", "user")),
        "device_idx": vocabularies.index("device", _value(user, "device", "user")),
        "region_idx": vocabularies.index("region", _value(user, "region", "user")),
        "age_group_idx": vocabularies.index("age_group", _value(user, "age_group", "user")),
        "hour": _number(user, "hour", "user"),
        "day_of_week": _number(user, "day_of_week", "user"),
        "user_click_count": _number(user, "user_click_count", "user", clicks),
        "is_new_user": _flag(user, "is_new_user", "user", False),
        "treatment": _number(user, "treatment", "user", 0),
    }
    if isinstance(candidates, dict):
        columns = _column_candidates(candidates, vocabularies, request_values["treatment"])
    else:
        columns = _fast_candidates(candidates, vocabularies, request_values["treatment"])
        if columns is None:  # something is off: the field-by-field pass says what, and where
            columns = _checked_candidates(candidates, vocabularies, request_values["treatment"])
    item_ids = columns.pop("item_id")
    n = len(item_ids)
    scalars = {name: np.full(n, value, dtype=DTYPES[name]) for name, value in request_values.items()}
    for name, values in columns.items():
        scalars[name] = np.asarray(values).astype(DTYPES[name])
    history_lists = {
        "hist_item_idx": np.asarray(hist_items, dtype=np.int64),
        "hist_category_idx": np.asarray(hist_cats, dtype=np.int64),
        "hist_age_s": np.asarray(hist_ages, dtype=np.float64),
        "hist_rel_pos": np.arange(length, 0, -1, dtype=np.int64),  # oldest kept click = length, newest = 1
    }
    lengths = np.full(n, length, dtype=np.int64)
    lists = {name: (np.tile(v.astype(DTYPES[name]), n), lengths) for name, v in history_lists.items()}
    return Rows(n, scalars, lists, one_user=True), item_ids


CANDIDATE_NUMBERS = ("price", "item_age_days", "position", "treatment")
#: A candidate's fields: the required ones, then the optional (defaults: position = list order,
#: is_new_item = false, treatment = the user's).
CANDIDATE_FIELDS = ("item_id", "category", "price", "item_age_days", "position", "is_new_item", "treatment")
REQUIRED_CANDIDATE_FIELDS = CANDIDATE_FIELDS[:4]


def _fast_candidates(
    candidates: list[Any], vocabularies: Vocabularies, treatment: Any
) -> dict[str, Any] | None:
    """The candidate columns: each field read in one C-level pass (`map` over `itemgetter` /
    `dict.get`, the optional ones with their defaults), then checked and converted as the columnar
    form (`_column_candidates`); 1,000 candidates in about 0.5 ms on one AMD EPYC thread. None when
    any field is missing or mistyped: then `_checked_candidates` finds it and names the candidate."""
    if set(map(type, candidates)) != {dict}:
        return None
    try:
        columns = {name: list(map(itemgetter(name), candidates)) for name in REQUIRED_CANDIDATE_FIELDS}
    except KeyError:
        return None
    get = dict.get
    columns["position"] = list(map(get, candidates, repeat("position"), range(len(candidates))))
    columns["treatment"] = list(map(get, candidates, repeat("treatment"), repeat(treatment)))
    columns["is_new_item"] = list(map(get, candidates, repeat("is_new_item"), repeat(False)))
    try:
        return _column_candidates(columns, vocabularies, treatment)
    except BundleError:
        return None


def _column_candidates(
    candidates: dict[str, Any], vocabularies: Vocabularies, treatment: Any
) -> dict[str, Any]:
    """The columnar form, one list per field (as TF Serving's "inputs" beside its row-wise
    "instances"): no object per candidate to build in JSON or to take apart here (1,000 candidates:
    ~0.43 ms against ~0.62 ms for the list of objects, one AMD EPYC thread). The same fields,
    defaults and checks as a list of candidates; an error names the field and the position
    (``candidates.price[3]``), and an unknown field is refused rather than ignored (a misspelt
    optional field would otherwise silently take its default)."""
    unknown = sorted(set(candidates) - set(CANDIDATE_FIELDS))
    if unknown:
        raise BundleError(
            f"request: candidates has unknown field(s) {', '.join(map(repr, unknown))}; "
            f"the fields are {', '.join(CANDIDATE_FIELDS)}"
        )
    for name in REQUIRED_CANDIDATE_FIELDS:
        _value(candidates, name, "candidates")
    n = None
    for name in CANDIDATE_FIELDS:
        column = candidates.get(name)
        if column is None and name not in REQUIRED_CANDIDATE_FIELDS:
            continue
        if not isinstance(column, list):
            raise BundleError(
                f"request: candidates.{name} must be a list (the columnar form: one list per field)"
            )
        if n is None:
            n = len(column)
        elif len(column) != n:
            raise BundleError(
                f"request: candidates.{name} has {len(column)} values, candidates.item_id {n}: "
                "every field needs one value per candidate"
            )
    if not n:
        raise BundleError("request: candidates.item_id is empty: a request needs at least one candidate")
    item_ids = candidates["item_id"]
    out: dict[str, Any] = {
        "item_id": list(item_ids),
        "item_idx": vocabularies.indices("item", item_ids),
        "category_idx": vocabularies.indices("category", candidates["category"]),
    }
    for name in CANDIDATE_NUMBERS:
        column = candidates.get(name)
        if column is not None:
            out[name] = _number_column(column, f"candidates.{name}")
        elif name == "position":  # the list order
            out[name] = np.arange(n, dtype=np.float64)
        else:  # treatment: the user's
            out[name] = np.full(n, treatment, dtype=np.float64)
    flags = candidates.get("is_new_item")
    if flags is None:
        out["is_new_item"] = np.zeros(n, dtype=np.bool_)
    else:
        if not set(map(type, flags)) <= {bool, int}:  # the slow pass only to name the bad value
            for i, value in enumerate(flags):
                _as_flag(value, f"candidates.is_new_item[{i}]")
        out["is_new_item"] = np.asarray(flags, dtype=np.bool_)
    return out


def _number_column(values: list[Any], where: str) -> np.ndarray:
    """A list of JSON numbers as float64, or `BundleError` naming the first value that is not a
    finite number (``where[i]``)."""
    array = np.asarray(values, dtype=np.float64) if set(map(type, values)) <= {int, float} else None
    if array is None or not np.isfinite(array).all():  # the slow pass only to name the bad value
        for i, value in enumerate(values):
            _as_number(value, f"{where}[{i}]")
        array = np.asarray(values, dtype=np.float64)  # int / float subclasses, all good
    return array


def _checked_candidates(candidates: list[Any], vocabularies: Vocabularies, treatment: Any) -> dict[str, Any]:
    """The candidate columns, field by field, raising `BundleError` at the first bad one by name."""
    columns: dict[str, list[Any]] = {
        name: [] for name in ("item_id", "item_idx", "category_idx", "is_new_item")
    }
    columns.update({name: [] for name in CANDIDATE_NUMBERS})
    for i, candidate in enumerate(candidates):
        where = f"candidates[{i}]"
        if not isinstance(candidate, dict):
            raise BundleError(f"request: {where} must be an object")
        columns["item_id"].append(_value(candidate, "item_id", where))
        columns["item_idx"].append(vocabularies.index("item", candidate["item_id"]))
        columns["category_idx"].append(vocabularies.index("category", _value(candidate, "category", where)))
        columns["price"].append(_number(candidate, "price", where))
        columns["item_age_days"].append(_number(candidate, "item_age_days", where))
        columns["position"].append(_number(candidate, "position", where, i))
        columns["is_new_item"].append(_flag(candidate, "is_new_item", where, False))
        columns["treatment"].append(_number(candidate, "treatment", where, treatment))
    return columns


# -- models -----------------------------------------------------------------------------------------
def sigmoid(logits: np.ndarray) -> np.ndarray:
    """As the torch plugins' `predict`: logits clipped to [-50, 50], float64."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64), -50.0, 50.0)))


def pad_lists(
    values: np.ndarray, lengths: np.ndarray, length: int, dtype: Any, vocabulary_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, length) right-aligned, zero-padded, the most recent entries kept; kept lengths (n,)):
    the layout of `ctr_dagster.training.batching.pad_sequences`, out-of-vocabulary ids -> OOV."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.minimum(lengths, length)
    out = np.zeros((n, length), dtype=dtype)
    if n and len(values) and length:
        slots = np.arange(length) - length
        source = offsets[1:, None] + slots[None, :]
        real = slots[None, :] >= -keep[:, None]
        np.clip(source, 0, len(values) - 1, out=source)
        np.copyto(out, np.asarray(values)[source], where=real, casting="unsafe")
        if vocabulary_size is not None:
            out[(out < 0) | (out >= vocabulary_size)] = OOV
    return out, keep


class TorchProgram:
    """A torch.export program called on the encoded numpy inputs; it checks its inputs once per input
    signature, not on every call.

    The unlifted module of a torch.export program checks every call against what was exported (the
    inputs' structure and the ranges of dynamic sizes): about 0.8 ms a call of SUAN's one-request
    program on one AMD EPYC thread, an eighth of its 1,000-candidate latency. The runtime builds the
    inputs itself (`TorchExportModel.encode`), so the same names, dtypes and shapes pass or fail the
    same way every time: the first call with a signature runs torch's check, later calls with it skip
    it. A signature that fails is not remembered, so it fails the same way again."""

    def __init__(self, program: Any):
        import torch

        self.torch = torch
        self.program = program
        self.checked: set[tuple] = set()

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        batch = {name: torch.from_numpy(array) for name, array in arrays.items()}
        signature = tuple((name, t.dtype, tuple(t.shape)) for name, t in batch.items())
        known = signature in self.checked
        self.program.validate_inputs = not known
        with torch.no_grad():
            out = self.program(batch)
        if not known:
            self.checked.add(signature)
        return out.float().numpy()


class OnnxProgram:
    """The same network converted to ONNX (`ctr_dagster.serving.onnx_export`), run by ONNX Runtime:
    one call into its C++ graph instead of one Python call per operator (module docstring of
    onnx_export for the figures). `inputs`: ONNX input name -> encoded input name."""

    def __init__(self, path: Path, inputs: dict[str, str], threads: int | None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's default (the cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in self.session.get_inputs()}
        if wanted - set(inputs):
            raise BundleError(
                f"{path.name}: inputs {sorted(wanted - set(inputs))} are not in the bundle's spec"
            )
        self.inputs = {name: key for name, key in inputs.items() if name in wanted}

    def __call__(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: arrays[key] for name, key in self.inputs.items()}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


#: Which engine runs a ``torch_export`` bundle's network: "auto" = the one the export timed faster
#: (``onnx.preferred``) among those available here (ONNX Runtime needs the bundle's ONNX programs and
#: onnxruntime installed; torch needs torch); "onnx" or "torch" to insist.
ENGINES = ("auto", "onnx", "torch")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_engine(spec: dict[str, Any], engine: str) -> str:
    """The engine ("onnx" or "torch") that runs a ``torch_export`` bundle's network (`ENGINES`)."""
    if engine not in ENGINES:
        raise BundleError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    onnx = spec.get("onnx") or {}
    if engine == "torch" or (engine == "auto" and not onnx):
        return "torch"
    if not onnx:
        why = spec.get("onnx_rejected") or "exported before bundles held ONNX"
        raise BundleError(f"this bundle holds no ONNX program ({why})")
    if not _installed("onnxruntime"):
        if engine == "onnx":
            raise BundleError("onnxruntime is not installed (pip install onnxruntime)")
        return "torch"
    if engine == "auto" and onnx.get("preferred") == "torch" and _installed("torch"):
        return "torch"
    return "onnx"


class TorchExportModel:
    """``torch_export``: a torch plugin's network (a torch.export program, and the same as ONNX where
    the export could convert it) fed by the engine's batch encoding (``encoding.json``).

    The encoding mirrors `ctr_dagster.training.batching.BatchEncoder.numpy`: ids outside a table ->
    OOV (fixed categories such as the hour clipped), dense columns log1p'ed where listed and
    standardized with the train split's mean/std, sequences right-aligned with a mask.

    An optional second program (``request_program``, e.g. SUAN's: the history encoded once per
    request) scores rows that share one user and may read the user's inputs from row 0; `predict`
    runs it on such rows (`shares_one_user`: every parsed request) when `use_request_program`, the
    general program on any others. `runs` counts the calls of each; `engine` says which runs them
    (`choose_engine`)."""

    def __init__(self, directory: Path, spec: dict[str, Any], threads: int | None, engine: str = "auto"):
        encoding = json.loads((directory / spec["encoding"]).read_text(encoding="utf-8"))
        self.categorical = {name: int(size) for name, size in encoding["categorical"]}
        self.dense = list(encoding["dense"])
        self.log_dense = set(encoding["log_dense"])
        self.sequence = list(encoding["sequence"])
        self.max_seq_len = int(encoding["max_seq_len"])
        self.mean = np.asarray(encoding["mean"], dtype=np.float64)
        self.std = np.asarray(encoding["std"], dtype=np.float64)
        self.inputs = list(encoding["inputs"])
        self.engine = choose_engine(spec, engine)
        if self.engine == "onnx":
            onnx = spec["onnx"]

            def load(key: str) -> OnnxProgram:
                return OnnxProgram(directory / onnx[key], onnx["inputs"][key], threads)
        else:
            import torch

            if threads:
                torch.set_num_threads(int(threads))

            def load(key: str) -> TorchProgram:
                return TorchProgram(torch.export.load(str(directory / spec[key])).module())

        self.program = load("program")
        self.request_program = load("request_program") if spec.get("request_program") else None
        self.use_request_program = True
        self.runs = {"general": 0, "request": 0}

    @staticmethod
    def files(spec: dict[str, Any]) -> list[str]:
        extra = [spec["request_program"]] if spec.get("request_program") else []
        onnx = spec.get("onnx") or {}
        extra += [onnx[key] for key in ("program", "request_program") if onnx.get(key)]
        return [spec["program"], spec["encoding"], *extra]

    @staticmethod
    def _vocabulary_of(name: str) -> str | None:
        return name.removeprefix("hist_") if name in ("hist_item_idx", "hist_category_idx") else None

    def encode(self, rows: Rows) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, size in self.categorical.items():
            values = rows.scalar(name).astype(np.int64)
            if name.endswith("_idx"):
                values = np.where((values < 0) | (values >= size), OOV, values)
            else:
                values = np.clip(values, 0, size - 1)
            out[name] = values
        columns = []
        for name in self.dense:
            x = rows.scalar(name).astype(np.float64)
            columns.append(np.log1p(np.maximum(x, 0.0)) if name in self.log_dense else x)
        matrix = np.column_stack(columns) if columns else np.zeros((rows.n, 0))
        dense = (matrix - self.mean) / self.std
        if not np.all(np.isfinite(dense)):
            col = int(np.nonzero(~np.isfinite(dense))[1][0])
            raise BundleError(f"dense column {self.dense[col]!r} has a NaN/inf value")
        out["dense"] = dense.astype(np.float32)
        kept = None
        # one user's rows (a parsed request) hold one history n times: pad it once and repeat the row
        one = rows.one_user and rows.n > 1
        for name in self.sequence:
            base = self._vocabulary_of(name)
            dtype = np.int64 if base is not None or name == "hist_rel_pos" else np.float32
            size = self.categorical[base] if base is not None else None
            values, lengths = rows.values(name), rows.lengths(name)
            if one:
                values, lengths = values[: int(lengths[0])], lengths[:1]
            out[name], keep = pad_lists(values, lengths, self.max_seq_len, dtype, size)
            if one:
                out[name], keep = np.repeat(out[name], rows.n, axis=0), np.repeat(keep, rows.n)
            kept = keep if kept is None else kept
        if kept is not None:
            out["hist_len"] = kept.astype(np.int64)
            out["hist_mask"] = np.arange(self.max_seq_len)[None, :] >= (self.max_seq_len - kept)[:, None]
        return out

    def predict(self, rows: Rows) -> np.ndarray:
        encoded = self.encode(rows)
        arrays = {name: np.ascontiguousarray(encoded[name]) for name in self.inputs}
        shared = self.request_program is not None and self.use_request_program and shares_one_user(rows)
        self.runs["request" if shared else "general"] += 1
        return sigmoid((self.request_program if shared else self.program)(arrays))


def load_program(path: Path, attribute: str) -> Any:
    """A feature program shipped in the bundle (a numpy-only Python file), after `verify` checked it."""
    spec = importlib.util.spec_from_file_location(f"ctr_bundle_program_{sha256_file(path)[:12]}", path)
    if spec is None or spec.loader is None:
        raise BundleError(f"{path}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise BundleError(f"{path}: defines no function {attribute}(rows, state, arrays)")
    return function


class LightgbmBundleModel:
    """``lightgbm``: a booster in LightGBM's text format over the matrix of the plugin's feature program.

    The program (``features``: a Python file of the bundle) is `features(rows, state, arrays) ->
    float64[n, features]`, with ``state`` its JSON and ``arrays`` its ``.npy`` files. (`engine` is for
    torch models' bundles; a booster always runs in LightGBM.)"""

    def __init__(self, directory: Path, spec: dict[str, Any], threads: int | None, engine: str = "auto"):
        import lightgbm

        self.booster = lightgbm.Booster(model_file=str(directory / spec["booster"]))
        self.features = load_program(directory / spec["features"], "features")
        self.state = json.loads((directory / spec["state"]).read_text(encoding="utf-8"))
        self.arrays = {
            name: np.load(directory / file, allow_pickle=False)
            for name, file in (spec.get("arrays") or {}).items()
        }
        self.threads = int(threads or 0)

    @staticmethod
    def files(spec: dict[str, Any]) -> list[str]:
        return [spec["booster"], spec["features"], spec["state"], *(spec.get("arrays") or {}).values()]

    def predict(self, rows: Rows) -> np.ndarray:
        x = self.features(rows, self.state, self.arrays)
        if x.shape != (rows.n, self.booster.num_feature()):
            raise BundleError(
                f"feature program made a {x.shape} matrix; the booster reads {self.booster.num_feature()} features"
            )
        scores = self.booster.predict(x, num_threads=self.threads)
        return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)


MODEL_KINDS = {"torch_export": TorchExportModel, "lightgbm": LightgbmBundleModel}


def _version_warnings(manifest: dict[str, Any]) -> list[str]:
    """Library versions that differ from the export's (major.minor): a torch.export program is only
    promised to load on the version that wrote it."""
    import importlib.metadata

    out = []
    for library, wanted in (manifest.get("versions") or {}).get("runtime", {}).items():
        try:
            have = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            continue
        if wanted and have.split("+")[0].split(".")[:2] != str(wanted).split("+")[0].split(".")[:2]:
            out.append(f"{library} {have} here, the bundle was exported with {wanted}")
    return out


class Bundle:
    """A verified bundle: its manifest, vocabularies and model, ready to score requests."""

    def __init__(self, directory: Path, manifest: dict[str, Any], vocabularies: Vocabularies, model: Any):
        self.directory = directory
        self.manifest = manifest
        self.vocabularies = vocabularies
        self.model = model
        self.name = manifest["model"]["name"]
        self.history_capacity = (manifest.get("request") or {}).get("history_capacity")

    def score_rows(self, rows: Rows) -> np.ndarray:
        """Click probabilities of index-space rows (any users): what the parity checks compare."""
        if rows.n == 0:
            return np.zeros(0, dtype=np.float64)
        return self.model.predict(rows)

    def score(self, request: dict[str, Any]) -> np.ndarray:
        """Click probabilities of a request's candidates, in their order (float64[n])."""
        rows, _ = parse_request(request, self.vocabularies, self.history_capacity)
        return self.score_rows(rows)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer to one request: scores in the candidates' order and the ranking."""
        rows, item_ids = parse_request(request, self.vocabularies, self.history_capacity)
        scores = self.score_rows(rows)
        order = np.argsort(-scores, kind="stable")
        return {
            "model": self.name,
            "user_id": request["user"].get("user_id"),
            "scores": [
                {"item_id": item, "score": float(s)} for item, s in zip(item_ids, scores, strict=True)
            ],
            "ranking": [item_ids[i] for i in order],
        }


def load(directory: str | Path, threads: int | None = None, engine: str = "auto") -> Bundle:
    """Verify and load a bundle. `threads`: intra-op threads of torch / ONNX Runtime / LightGBM (None:
    their default); `engine`: what runs a torch plugin's network (`ENGINES`)."""
    directory = Path(directory)
    manifest = verify(directory)
    for line in _version_warnings(manifest):
        print(f"warning: {line}", file=sys.stderr)
    model_spec = manifest["model"]
    kind = model_spec.get("kind")
    if kind not in MODEL_KINDS:
        raise BundleError(
            f"bundle {directory}: unknown model kind {kind!r}; this runtime runs {sorted(MODEL_KINDS)}"
        )
    vocabulary_files = (manifest.get("request") or {}).get("vocabularies") or {}
    model_files = [f"{model_spec['directory']}/{name}" for name in MODEL_KINDS[kind].files(model_spec)]
    unlisted = sorted(set(vocabulary_files.values()) | set(model_files))
    unlisted = [name for name in unlisted if name not in manifest["files"]]
    if unlisted:  # everything read must be hash-checked
        raise BundleError(f"bundle {directory}: {unlisted} are read but not listed in the manifest")
    vocabularies = Vocabularies.load(directory, vocabulary_files)
    model = MODEL_KINDS[kind](directory / model_spec["directory"], model_spec, threads, engine)
    return Bundle(directory, manifest, vocabularies, model)


def score(directory: str | Path, request: dict[str, Any]) -> dict[str, Any]:
    """One call: load the bundle at `directory` and answer `request` (see `Bundle.answer`)."""
    return load(directory).answer(request)


# -- command line -----------------------------------------------------------------------------------
def answer_text(answer: dict[str, Any]) -> str:
    lines = [f"{answer['model']}: {len(answer['scores'])} candidates for user {answer['user_id']}"]
    by_item = {s["item_id"]: s["score"] for s in answer["scores"]}
    width = max(len(str(i)) for i in by_item) if by_item else 7
    lines.append(f"{'rank':>4}  {'item_id':<{width}}  score")
    lines += [
        f"{rank:>4}  {item!s:<{width}}  {by_item[item]:.6f}" for rank, item in enumerate(answer["ranking"], 1)
    ]
    return "\n".join(lines)


def run(
    bundle_dir: Path, request_file: Path, as_json: bool, threads: int | None = None, engine: str = "auto"
) -> str:
    """The text a command prints for a request file (one request object, or a list of them)."""
    try:
        document = json.loads(Path(request_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{request_file}: cannot read a JSON request ({exc})") from exc
    bundle = load(bundle_dir, threads, engine)
    requests: Iterable[Any] = document if isinstance(document, list) else [document]
    answers = [bundle.answer(r) for r in requests]
    if as_json:
        return json.dumps(answers if isinstance(document, list) else answers[0], indent=2)
    return "\n\n".join(answer_text(a) for a in answers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score one user's candidates with a serving bundle.")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="bundle folder (default: this file's)",
    )
    parser.add_argument(
        "--request", type=Path, required=True, help="JSON request file (an object, or a list)"
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the library's)")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="what runs a torch model's network: ONNX Runtime where the bundle has ONNX, else torch (auto)",
    )
    args = parser.parse_args(argv)
    try:
        print(run(args.bundle, args.request, args.json, args.threads, args.engine))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
