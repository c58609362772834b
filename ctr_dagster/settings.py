"""The project's settings: one object, built in one place, passed explicitly.

`Settings.from_env()` is the only reader of the project's environment variables; the CLI applies its
flags on top (`Settings.replace`). Everything downstream receives the object or a piece of it: the
code location is built by ``assets.definitions.build_definitions(settings)``, the engine gets a
`Home` (where generated state lives), a source (`ctr_dagster.sources.Source`) or a seed. Each default
is declared once, here (the world's seed: `WorldConfig.seed`, the generator's own default).

| field | variable | default | meaning |
|---|---|---|---|
| source | ``CTR_SOURCE`` | ``synthetic`` | ``synthetic`` (the built-in world) or ``import`` (the user's files) |
| profile | ``CTR_PROFILE`` | ``small`` | synthetic profile: ``tiny``, ``small``, ``large`` |
| seed | ``CTR_SEED`` | the world's | seed of the synthetic world |
| signals | ``CTR_SIGNALS`` | all 1.0 | planted-signal strengths, ``sequence=0,temporal=0.5`` |
| mapping | ``CTR_MAPPING`` | none | the import mapping YAML (``examples/mapping.example.yaml``) |
| home | ``CTR_HOME`` | ``./.ctr_home`` | generated state: warehouse, artifacts, champion, ... |
| warehouse | ``CTR_WAREHOUSE`` | none: ``<data_home>/warehouse`` | where the Parquet tables live instead: ``s3://bucket/prefix`` (object storage) or a local folder; imported logs get ``<warehouse>/import/<stem>-<hash>`` |
| dagster_home | ``DAGSTER_HOME`` | none | the Dagster instance the CLI records its runs in (none: ephemeral) |
| warm_start | ``CTR_WARM_START`` | on | nightly runs continue each model from its own previous artifact (``0``: off) |
| full_retrain_every_days | ``CTR_FULL_RETRAIN_EVERY_DAYS`` | 7 | warm-started models retrain from scratch once the data moved this many days past their last full retrain |
| models | ``CTR_MODELS`` | every installed one | the model plugins to build assets for, comma-separated (``lightgbm,din``); distilled students need their teacher selected too |

Torch-free and numpy-free: the code location imports this when it loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctr_dagster.datagen.config import WorldConfig

SOURCES = ("synthetic", "import")
#: URI schemes of an object-store warehouse (`ctr_dagster.warehouse.ObjectStoreWarehouse`).
OBJECT_SCHEMES = ("s3://",)
DEFAULT_PROFILE = "small"
#: Warm-started (nightly) trainings retrain from scratch once the data has moved this many days past the
#: model's last full retrain (`Settings.full_retrain_every_days`, the model assets' launchpad field).
FULL_RETRAIN_EVERY_DAYS = 7

#: Settings field -> the environment variable it is read from (and written to for child processes).
ENV_VARS = {
    "source": "CTR_SOURCE",
    "profile": "CTR_PROFILE",
    "seed": "CTR_SEED",
    "signals": "CTR_SIGNALS",
    "mapping": "CTR_MAPPING",
    "home": "CTR_HOME",
    "warehouse": "CTR_WAREHOUSE",
    "dagster_home": "DAGSTER_HOME",
    "warm_start": "CTR_WARM_START",
    "full_retrain_every_days": "CTR_FULL_RETRAIN_EVERY_DAYS",
    "models": "CTR_MODELS",
}
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Home:
    """Where the project keeps generated state; each folder under it is named here, once.

    The tables may live elsewhere (`warehouse_uri`, from ``CTR_WAREHOUSE``: an ``s3://`` URI or a local
    folder); everything else stays under `root`. Open the warehouse with `open_warehouse`.
    """

    root: Path
    warehouse_uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.warehouse_uri is not None:
            object.__setattr__(self, "warehouse_uri", str(self.warehouse_uri) or None)

    @property
    def warehouse(self) -> Path | str:
        """Parquet tables, the record of every stage (`ctr_dagster.warehouse`): ``<root>/warehouse``,
        or `warehouse_uri` when set (a local folder as a `Path`, an object-store URI as a string)."""
        if self.warehouse_uri is None:
            return self.root / "warehouse"
        return self.warehouse_uri if is_object_uri(self.warehouse_uri) else Path(self.warehouse_uri)

    @property
    def locks(self) -> Path:
        """Write locks of a warehouse on object storage (the vocabularies'): a local folder has them
        beside its tables, an object store has no file locks."""
        return self.root / "locks"

    def open_warehouse(self):
        """The `ctr_dagster.warehouse.Warehouse` of `warehouse` (an `ObjectStoreWarehouse` for a URI,
        its locks under `locks`). Imported here: pyarrow loads only when a step runs."""
        from ctr_dagster.warehouse import Warehouse

        where = self.warehouse
        return Warehouse(where, lock_dir=self.locks) if isinstance(where, str) else Warehouse(where)

    @property
    def artifacts(self) -> Path:
        """Content-addressed model artifacts: ``artifacts/<model>/<sha16>/``."""
        return self.root / "artifacts"

    @property
    def models(self) -> Path:
        """Each model's latest training status: ``models/<model>/status.json``."""
        return self.root / "models"

    @property
    def records(self) -> Path:
        """Reproducibility records of every training."""
        return self.root / "records"

    @property
    def work(self) -> Path:
        """Per-model scratch space (torch checkpoints for resume)."""
        return self.root / "work"

    @property
    def champion(self) -> Path:
        return self.root / "champion"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def embedding_cache(self) -> Path:
        return self.root / "embedding_cache"

    @property
    def encoders(self) -> Path:
        """Weights of trainable encoders fitted by the embedding stage."""
        return self.root / "encoders"

    @property
    def reports(self) -> Path:
        """Plots attached to asset metadata."""
        return self.root / "reports"

    @property
    def import_index(self) -> Path:
        """File -> days index of the import source (`importers.day_index`)."""
        return self.root / "import_index.json"

    @property
    def import_staging(self) -> Path:
        """Per-day shards of each imported file, parsed once (`importers.staging`)."""
        return self.root / "import_staging"


@dataclass(frozen=True)
class Settings:
    """Source, profile, seed, signals, mapping and homes of one run of the project (see module doc)."""

    source: str = "synthetic"
    profile: str = DEFAULT_PROFILE
    seed: int = WorldConfig.seed
    signals: str = ""
    mapping: Path | None = None
    home: Path = Path(".ctr_home")
    warehouse: str | None = None
    dagster_home: Path | None = None
    warm_start: bool = True
    full_retrain_every_days: int = FULL_RETRAIN_EVERY_DAYS
    models: str = ""

    def __post_init__(self) -> None:
        # Paths are stored absolute, so a child process or a later `cd` sees the same folders.
        object.__setattr__(self, "home", Path(self.home).resolve())
        for name in ("mapping", "dagster_home"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).resolve())
        object.__setattr__(self, "warehouse", normalize_warehouse(self.warehouse))
        object.__setattr__(self, "signals", normalize_signals(self.signals))
        object.__setattr__(self, "models", ",".join(self.model_names))
        self.validate()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from the environment (`ENV_VARS`), then `overrides` (e.g. CLI flags) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            if name in ("seed", "full_retrain_every_days"):
                try:
                    values[name] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"{var}={raw!r} is not an integer") from exc
            elif name == "warm_start":
                values[name] = raw.lower() in _TRUE
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes` applied (None values ignored: an option the user did not give)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"CTR_SOURCE must be one of {SOURCES}, got {self.source!r}")
        if self.source == "import" and self.mapping is None:
            raise ValueError("CTR_SOURCE=import needs CTR_MAPPING=<path to mapping YAML>")
        if self.source == "synthetic":
            from ctr_dagster.datagen.config import PROFILES

            if self.profile not in PROFILES:
                raise ValueError(f"CTR_PROFILE must be one of {sorted(PROFILES)}, got {self.profile!r}")
            parse_signals(self.signals)  # a typo fails here, naming the knob

    @property
    def model_names(self) -> tuple[str, ...]:
        """The selected model plugins (`models`, sorted, no duplicates); empty: every installed one."""
        return tuple(sorted({n.strip() for n in str(self.models or "").split(",") if n.strip()}))

    @property
    def data_home(self) -> Path:
        """Where this data's state lives: `home` for the synthetic world; for imported logs a folder
        per mapping file under it (``import/<stem>-<hash>``), so importing a log into a home that
        also holds the demo (or another log) never mixes their days, models or champion."""
        if self.source != "import" or self.mapping is None:
            return self.home
        import hashlib

        digest = hashlib.sha1(str(self.mapping).encode()).hexdigest()[:8]
        return self.home / "import" / f"{self.mapping.stem}-{digest}"

    @property
    def data_warehouse(self) -> str | None:
        """`warehouse` for this data (None: ``<data_home>/warehouse``). Imported logs keep their own
        tables as under the home: the data home's folder (``import/<stem>-<hash>``) is appended to the
        location, before an ``s3://`` URI's query string."""
        if self.warehouse is None or self.data_home == self.home:
            return self.warehouse
        relative = self.data_home.relative_to(self.home).as_posix()
        if not is_object_uri(self.warehouse):
            return str(Path(self.warehouse) / relative)
        location, sep, query = self.warehouse.partition("?")
        return f"{location.rstrip('/')}/{relative}{sep}{query}"

    @property
    def ctr_home(self) -> Home:
        return Home(self.data_home, self.data_warehouse)

    @property
    def label(self) -> str:
        """One line saying which data this is, for logs and the leaderboard."""
        if self.source == "import":
            return f"import mapping={self.mapping}"
        return f"synthetic profile={self.profile} seed={self.seed}" + (
            f" signals={self.signals}" if self.signals else ""
        )

    def as_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings in a child process."""
        env = {}
        for name, var in ENV_VARS.items():
            value = getattr(self, name)
            if value is None:
                continue
            env[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env


def is_object_uri(location: object) -> bool:
    """True for an object-store location such as ``s3://bucket/prefix`` (a `Path` never is)."""
    return isinstance(location, str) and location.startswith(OBJECT_SCHEMES)


def normalize_warehouse(location: str | Path | None) -> str | None:
    """``CTR_WAREHOUSE`` in one spelling: None when unset, an ``s3://`` URI without a trailing slash,
    or a local folder made absolute (like every path here)."""
    if location is None or not str(location).strip():
        return None
    text = str(location).strip()
    if is_object_uri(text):
        path, sep, query = text.partition("?")
        bucket = path.split("://", 1)[1].split("/", 1)[0]
        if not bucket:
            raise ValueError(f"CTR_WAREHOUSE={text!r} names no bucket: expected s3://bucket/prefix")
        return f"{path.rstrip('/')}{sep}{query}"
    if "://" in text:
        raise ValueError(
            f"CTR_WAREHOUSE={text!r}: only {', '.join(OBJECT_SCHEMES)} URIs or a local folder are supported"
        )
    return str(Path(text).resolve())


def normalize_signals(text: str | Mapping[str, float] | None) -> str:
    """``"b=1, a=0"`` or ``{"a": 0, "b": 1}`` -> ``"a=0,b=1"`` (one spelling, so equal settings compare equal)."""
    if not text:
        return ""
    if isinstance(text, Mapping):
        parts = [f"{k}={v}" for k, v in text.items()]
    else:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
    return ",".join(sorted(p.replace(" ", "") for p in parts))


def parse_signals(text: str):
    """``"sequence=0,temporal=0.5"`` -> `Signals` with those knobs changed (others at 1.0)."""
    from ctr_dagster.datagen.config import Signals

    known = {f.name for f in dataclasses.fields(Signals)}
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(
                f"CTR_SIGNALS: bad item {part!r}; expected name=value with name in {sorted(known)}"
            )
        try:
            values[name] = float(value)
        except ValueError as exc:
            raise ValueError(f"CTR_SIGNALS: {name}={value!r} is not a number") from exc
    return Signals(**values)


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``["lr=0.001", "hidden=[64, 32]", "schedule=cosine"]`` -> ``{"lr": 0.001, "hidden": [64, 32],
    "schedule": "cosine"}``: the benchmarks' and scripts' config overrides, one spelling for all. A value
    is read as JSON, or kept as the raw string when it is not JSON (so a bare word needs no quotes);
    the config it lands in checks its type. An item without ``=`` or a key is an error naming `option`."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{option}: expected KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def parse_model_assignments(items: Iterable[str], option: str = "--override") -> dict[str, dict[str, Any]]:
    """``["din:batch_size=256", "suan:grade=5"]`` -> ``{"din": {"batch_size": 256}, "suan": {"grade":
    5}}``: per-model config overrides of the benchmarks, each value as in `parse_assignments`."""
    settings: dict[str, dict[str, Any]] = {}
    for item in items:
        model, colon, assignment = item.partition(":")
        if not (model and colon and "=" in assignment):
            raise ValueError(f"{option}: expected MODEL:KEY=JSON, got {item!r}")
        settings.setdefault(model, {}).update(parse_assignments([assignment], option))
    return settings
