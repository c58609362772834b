"""The item catalogue: categories, latent vectors, prices, attribute values and where each value shows.

Attribute truth lives here once; the structured catalogue, the titles, the images and the oracle
attribute table are all views of it. Values of held-out categories may come from a vocabulary no
training category uses (zero-shot); such values are new to the taxonomy, so the structured
catalogue never lists them and only the title/image can reveal them.

The `neighbourhood` knob groups each category's items into product lines that share their material
and style values and whose latents cluster; many members hide the line value from their own title
and image, the line's flagship (its most popular member stating the value) always states it.
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

# -- the `neighbourhood` knob: product lines (drawn from the `lines` stream, so strength 0 draws
# nothing and leaves the world exactly as without the knob) ------------------------------------
#: Members per line (uniform; a short remainder joins the category's last line). 5-9: enough mates
#: that a co-view neighbourhood often holds one stating a hidden value (and that a line fills a
#: widget), few enough that a line stays a tight cluster rather than a sub-category.
LINE_SIZE = (5, 9)
#: Attributes a line shares (where the category has them); brand and colour stay per item, so the
#: price model (brand) and the image colour tests are untouched.
LINE_ATTRIBUTES: tuple[str, ...] = ("material", "style")
#: Share of members (anchors excepted) whose line value is hidden from title and image, times the
#: strength: 0.6 makes the hidden values common (HyperPAVE has something to recover) while about a
#: quarter of the members, plus each line's anchor, still state the value in the title.
LINE_HIDE_SHARE = 0.6
#: Share of an item's latent offset variance (from its category centre) that comes from its line at
#: strength 1: line mates' offsets correlate at ~LINE_PULL (users who like one member like the
#: others) while the total offset variance, hence the category structure, the affinity spread and
#: the CTR level, stays as without the knob.
LINE_PULL = 0.8


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
    line: np.ndarray  # int32 [n], product line (`neighbourhood` knob), -1 when the knob is 0
    hidden_by_line: dict[str, np.ndarray]  # attribute -> bool [n], value hidden by the knob

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

    strength = config.signals.neighbourhood
    line = np.full(n, -1, dtype=np.int32)
    line_rng = rng_for(config.seed, "lines")  # draws only when strength > 0
    if strength > 0:
        line, leader = _draw_lines(line_rng, category, n_cat)
        for attribute in LINE_ATTRIBUTES:  # every member takes its leader's value (zero-shot or not)
            has = values[attribute] >= 0
            values[attribute] = np.where(has, values[attribute][leader[line]], -1).astype(np.int32)
            zero_shot[attribute] = has & zero_shot[attribute][leader[line]]
        pull = min(1.0, LINE_PULL * strength)
        offset = latent - centres[category]
        line_offset = line_rng.normal(size=(len(leader), d)) * (ITEM_NOISE / np.sqrt(d))
        latent = centres[category] + np.sqrt(1.0 - pull) * offset + np.sqrt(pull) * line_offset[line]
        unit = latent / np.linalg.norm(latent, axis=1, keepdims=True)

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

    hidden_by_line = {a: np.zeros(n, dtype=bool) for a in ATTRIBUTES}
    if strength > 0:
        hide_p = min(1.0, LINE_HIDE_SHARE * strength)
        for attribute in LINE_ATTRIBUTES:
            has = values[attribute] >= 0
            anchor = _anchors(line, in_title[attribute], popularity) & has
            stated = in_title[attribute] | anchor
            hide = has & ~anchor & (line_rng.random(n) < hide_p)
            hidden_by_line[attribute] = hide & (stated | in_image[attribute])  # visible before
            in_title[attribute] = stated & ~hide
            in_image[attribute] = in_image[attribute] & ~hide

    titles_, images_ = _render(config, rng, specs, category, values, in_title, in_image)
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
        line=line,
        hidden_by_line=hidden_by_line,
    )


def _draw_lines(rng: np.random.Generator, category: np.ndarray, n_cat: int) -> tuple[np.ndarray, np.ndarray]:
    """(line of each item, leader item of each line): each category's items in random order, cut
    into runs of LINE_SIZE members (a short remainder joins the previous line)."""
    line = np.full(len(category), -1, dtype=np.int32)
    leader: list[int] = []
    lo, hi = LINE_SIZE
    for c in range(n_cat):
        members = rng.permutation(np.flatnonzero(category == c))
        sizes: list[int] = []
        while sum(sizes) < len(members):
            sizes.append(int(rng.integers(lo, hi + 1)))
        sizes[-1] -= sum(sizes) - len(members)
        if len(sizes) > 1 and sizes[-1] < lo:
            tail = sizes.pop()
            sizes[-1] += tail
        for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True):
            line[members[start : start + size]] = len(leader)
            leader.append(int(members[start]))
    return line, np.array(leader, dtype=np.int64)


def _anchors(line: np.ndarray, stated: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """One member per line that always states the line value in its title: the line's flagship, i.e.
    its most popular member among those whose title already states the value (else overall)."""
    order = np.lexsort((-popularity, ~stated, line))
    first = np.r_[True, line[order][1:] != line[order][:-1]]
    out = np.zeros(len(line), dtype=bool)
    out[order[first]] = True
    return out


def _render(
    config: WorldConfig,
    rng: np.random.Generator,
    specs: tuple[CategorySpec, ...],
    category: np.ndarray,
    values: dict[str, np.ndarray],
    in_title: dict[str, np.ndarray],
    in_image: dict[str, np.ndarray],
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
        shown = material >= 0 and in_image["material"][i]  # a hidden line material: plain texture
        texture = material_texture(names["material"][material]) if shown else "plain"
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
