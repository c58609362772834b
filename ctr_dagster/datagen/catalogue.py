"""The item catalogue: categories, latent vectors, prices, attribute values and where each value shows.

Attribute truth lives here once; the structured catalogue, the titles, the images and the oracle
attribute table are all views of it. Values of held-out categories may come from a vocabulary no
training category uses (zero-shot); such values are new to the taxonomy, so the structured
catalogue never lists them and only the title/image can reveal them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctr_dagster.datagen import images, titles
from ctr_dagster.datagen.config import WorldConfig
from ctr_dagster.datagen.seeding import rng_for
from ctr_dagster.datagen.vocab import (
    ATTRIBUTES,
    BACKGROUNDS,
    FILLERS_PREFIX,
    FILLERS_SUFFIX,
    HELDOUT_CATEGORIES,
    REGULAR_CATEGORIES,
    SHARED_VALUES,
    ZERO_SHOT_VALUES,
    CategorySpec,
    all_values,
    material_texture,
)

ITEM_NOISE = 0.6  # norm of an item's offset from its category centre (relative to the centre)
ZERO_SHOT_SHARE = 0.5  # share of held-out items' values drawn from zero-shot vocab at zero_shot=1
NEW_ITEM_MISSING_BOOST = 0.2  # new listings are less complete in the structured catalogue
IN_TITLE_IF_MISSING = 0.8
IN_TITLE_IF_KNOWN = 0.45


@dataclass(frozen=True)
class Catalogue:
    """Array-of-columns truth about the items (index = item number, id = ``i%06d``)."""

    specs: tuple[CategorySpec, ...]
    heldout: np.ndarray  # bool [n_categories]
    centres: np.ndarray  # float64 [n_categories, d]
    category: np.ndarray  # int32 [n]
    latent: np.ndarray  # float32 [n, d]
    unit: np.ndarray  # float32 [n, d], latent / |latent| (item-item similarity)
    price: np.ndarray  # float32 [n]
    zprice: np.ndarray  # float64 [n], log price standardized within the category
    popularity: np.ndarray  # float64 [n], standard normal
    first_day: np.ndarray  # int32 [n], day index the item enters the catalogue
    values: dict[str, np.ndarray]  # attribute -> int32 [n] index into all_values(attr), -1 = n/a
    in_catalogue: dict[str, np.ndarray]
    in_title: dict[str, np.ndarray]
    in_image: dict[str, np.ndarray]
    zero_shot: dict[str, np.ndarray]
    titles: list[str]
    images: list[bytes]

    @property
    def n(self) -> int:
        return len(self.category)

    def value_names(self, attribute: str) -> tuple[str, ...]:
        return all_values(attribute)


def category_specs(config: WorldConfig) -> tuple[tuple[CategorySpec, ...], np.ndarray]:
    n_held = config.n_heldout_categories
    regular = REGULAR_CATEGORIES[: config.n_categories - n_held]
    held = HELDOUT_CATEGORIES[:n_held]
    return regular + held, np.array([False] * len(regular) + [True] * len(held))


def _allowed_values(spec: CategorySpec, attribute: str, brands: tuple[str, ...]) -> tuple[str, ...]:
    if attribute == "brand":
        return brands
    if attribute == "colour":
        return SHARED_VALUES["colour"]
    if attribute == "material":
        return spec.materials
    return spec.styles


def _zipf_choice(rng: np.random.Generator, k: int, size: int) -> np.ndarray:
    """Indices in [0, k) with a random Zipf-like preference (some values are common, some rare)."""
    weights = 1.0 / (1.0 + rng.permutation(k)) ** 0.8
    return rng.choice(k, size=size, p=weights / weights.sum())


def build_catalogue(config: WorldConfig) -> Catalogue:
    """Draw the whole catalogue from the `catalogue` random stream of the seed."""
    rng = rng_for(config.seed, "catalogue")
    specs, heldout = category_specs(config)
    n, n_cat, d = config.n_items, len(specs), config.latent_dim

    centres = rng.normal(size=(n_cat, d)) / np.sqrt(d)
    share = rng.dirichlet(np.full(n_cat, 6.0))
    category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, size=n - n_cat, p=share)])
    category = rng.permutation(category).astype(np.int32)
    latent = centres[category] + rng.normal(size=(n, d)) * (ITEM_NOISE / np.sqrt(d))
    unit = latent / np.linalg.norm(latent, axis=1, keepdims=True)

    popularity = rng.normal(size=n)
    first_day = np.zeros(n, dtype=np.int32)
    if config.n_days > 1:
        late = rng.random(n) < config.new_item_rate
        late[np.unique(category, return_index=True)[1]] = False  # every category exists on day 0
        first_day[late] = rng.integers(1, config.n_days, size=int(late.sum()))
    is_new = first_day > 0

    values: dict[str, np.ndarray] = {a: np.full(n, -1, dtype=np.int32) for a in ATTRIBUTES}
    zero_shot = {a: np.zeros(n, dtype=bool) for a in ATTRIBUTES}
    zs_share = min(1.0, ZERO_SHOT_SHARE * config.signals.zero_shot)
    brand_price = {}
    for c, spec in enumerate(specs):
        members = np.flatnonzero(category == c)
        brands = tuple(rng.choice(SHARED_VALUES["brand"], size=5, replace=False).tolist())
        brand_price.update({(c, b): rng.normal(0.0, 0.25) for b in brands})
        for attribute in spec.attributes:
            allowed = _allowed_values(spec, attribute, brands)
            vocab = all_values(attribute)
            picks = np.array([vocab.index(v) for v in allowed])[_zipf_choice(rng, len(allowed), len(members))]
            if heldout[c] and zs_share > 0:
                novel = rng.random(len(members)) < zs_share
                zs_vocab = np.array([vocab.index(v) for v in ZERO_SHOT_VALUES[attribute]])
                picks[novel] = rng.choice(zs_vocab, size=int(novel.sum()))
                zero_shot[attribute][members[novel]] = True
            values[attribute][members] = picks

    log_price = np.log([specs[c].price for c in category]) + rng.normal(0.0, 0.45, size=n)
    brand_names = all_values("brand")
    for i in np.flatnonzero(values["brand"] >= 0):
        log_price[i] += brand_price.get((int(category[i]), brand_names[values["brand"][i]]), 0.0)
    zprice = np.zeros(n)
    for c in range(n_cat):
        members = category == c
        spread = log_price[members].std() or 1.0
        zprice[members] = (log_price[members] - log_price[members].mean()) / spread
    price = np.round(np.exp(log_price), 2).astype(np.float32)

    in_catalogue, in_title, in_image = {}, {}, {}
    for attribute in ATTRIBUTES:
        has = values[attribute] >= 0
        missing_p = np.clip(config.missing_rate + NEW_ITEM_MISSING_BOOST * is_new, 0.0, 1.0)
        known = has & (rng.random(n) >= missing_p) & ~zero_shot[attribute]
        title_p = np.where(known, IN_TITLE_IF_KNOWN, IN_TITLE_IF_MISSING)
        in_catalogue[attribute] = known
        in_title[attribute] = has & (rng.random(n) < title_p)
        in_image[attribute] = has & (attribute in ("colour", "material"))

    titles_, images_ = _render(config, rng, specs, category, values, in_title)
    return Catalogue(
        specs=specs,
        heldout=heldout,
        centres=centres,
        category=category,
        latent=latent.astype(np.float32),
        unit=unit.astype(np.float32),
        price=price,
        zprice=zprice,
        popularity=popularity,
        first_day=first_day,
        values=values,
        in_catalogue=in_catalogue,
        in_title=in_title,
        in_image=in_image,
        zero_shot=zero_shot,
        titles=titles_,
        images=images_,
    )


def _render(
    config: WorldConfig,
    rng: np.random.Generator,
    specs: tuple[CategorySpec, ...],
    category: np.ndarray,
    values: dict[str, np.ndarray],
    in_title: dict[str, np.ndarray],
) -> tuple[list[str], list[bytes]]:
    """Titles and PNG images of every item (PNG bytes memoized per identical rendering)."""
    n = len(category)
    template = rng.integers(0, len(titles.TEMPLATES), size=n)
    noun_pick = rng.integers(0, 2, size=n)
    prefix = np.where(rng.random(n) < 0.3, rng.integers(0, len(FILLERS_PREFIX), size=n), -1)
    suffix = np.where(rng.random(n) < 0.3, rng.integers(0, len(FILLERS_SUFFIX), size=n), -1)
    background = rng.integers(0, len(BACKGROUNDS), size=n)
    shift = rng.integers(-images.MAX_SHIFT, images.MAX_SHIFT + 1, size=(n, 2))
    names = {a: all_values(a) for a in ATTRIBUTES}
    memo: dict[tuple, bytes] = {}
    titles_out, images_out = [], []
    for i in range(n):
        spec = specs[category[i]]
        stated = {a: names[a][values[a][i]] for a in ATTRIBUTES if in_title[a][i]}
        titles_out.append(
            titles.make_title(
                int(template[i]),
                spec.nouns[noun_pick[i] % len(spec.nouns)],
                stated,
                FILLERS_PREFIX[prefix[i]] if prefix[i] >= 0 else None,
                FILLERS_SUFFIX[suffix[i]] if suffix[i] >= 0 else None,
            )
        )
        material = values["material"][i]
        texture = material_texture(names["material"][material]) if material >= 0 else "plain"
        key = (
            names["colour"][values["colour"][i]],
            spec.shape,
            texture,
            int(background[i]),
            *shift[i].tolist(),
        )
        if key not in memo:
            memo[key] = images.render_png(*key[:4], dx=key[4], dy=key[5], size=config.image_size)
        images_out.append(memo[key])
    return titles_out, images_out
