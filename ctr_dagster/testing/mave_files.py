"""MAVE-style product files in the shape of real product titles, for tests and for trying
`ctr attributes` without downloading anything.

Real annotated title datasets (MAVE, and the product-title sets HyperPAVE-style extractors are run
on) look like this: a title that strings together brand, model words, some attribute values and
filler ("... for Men, Pack of 2"), a category, and per attribute either value(s) with their span in
the title or an empty evidence list (the attribute is not stated: MAVE's negative examples). Not every
product states every attribute of its category, values are Zipf-distributed, and a test split holds
values the train split never uses. `write_mave_split` writes such a train / test pair (and a
taxonomy file: every value of every attribute plus distractors no product has), seeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: category -> (nouns, {attribute: values}); values are what a title can state verbatim.
CATEGORIES: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "Guitar Strings": (
        ("Acoustic Guitar Strings", "Electric Guitar Strings"),
        {
            "Brand": (
                "D'Addario",
                "Ernie Ball",
                "Elixir",
                "Martin",
                "Fender",
                "Dunlop",
                "Gibson",
                "Cleartone",
            ),
            "Winding Material": (
                "Phosphor Bronze",
                "Nickel Wound",
                "80/20 Bronze",
                "Stainless Steel",
                "Pure Nickel",
            ),
            "Gauge": ("Extra Light", "Custom Light", "Light", "Medium", "Heavy", "Super Slinky"),
        },
    ),
    "Running Shoes": (
        ("Running Shoe", "Trail Running Shoes", "Road Running Sneaker"),
        {
            "Brand": ("Asics", "Brooks", "Saucony", "Hoka", "Mizuno", "New Balance", "Altra", "On"),
            "Color": ("Black", "White", "Navy", "Grey", "Red", "Blue", "Neon Yellow", "Teal"),
            "Gender": ("Men's", "Women's", "Unisex"),
            "Width": ("Narrow", "Regular", "Wide", "Extra Wide"),
        },
    ),
    "Coffee Makers": (
        ("Coffee Maker", "Drip Coffee Machine", "Espresso Machine"),
        {
            "Brand": (
                "Cuisinart",
                "Mr. Coffee",
                "Hamilton Beach",
                "Breville",
                "De'Longhi",
                "Keurig",
                "Ninja",
            ),
            "Capacity": ("4-Cup", "5-Cup", "10-Cup", "12-Cup", "14-Cup"),
            "Color": ("Black", "Stainless Steel", "White", "Red", "Brushed Chrome"),
        },
    ),
    "Laptop Bags": (
        ("Laptop Backpack", "Laptop Sleeve", "Messenger Bag"),
        {
            "Brand": ("Targus", "AmazonBasics", "Samsonite", "SwissGear", "Incase", "Case Logic"),
            "Screen Size": ("13 Inch", "14 Inch", "15.6 Inch", "17 Inch"),
            "Material": ("Nylon", "Polyester", "Leather", "Canvas", "Neoprene"),
            "Color": ("Black", "Grey", "Navy", "Olive", "Burgundy"),
        },
    ),
    "Phone Cases": (
        ("Phone Case", "Protective Cover", "Wallet Case"),
        {
            "Brand": ("OtterBox", "Spigen", "Speck", "Incipio", "ESR", "Caseology"),
            "Compatible Model": ("iPhone 13", "iPhone 14 Pro", "Galaxy S22", "Pixel 7", "iPhone SE"),
            "Material": ("Silicone", "TPU", "Polycarbonate", "Leather"),
            "Color": ("Clear", "Black", "Midnight Blue", "Pink", "Sierra Blue"),
        },
    ),
    "Yoga Mats": (
        ("Yoga Mat", "Exercise Mat", "Pilates Mat"),
        {
            "Brand": ("Manduka", "Gaiam", "Liforme", "Jade", "BalanceFrom"),
            "Thickness": ("1/8 Inch", "1/4 Inch", "6mm", "4mm", "1/2 Inch"),
            "Material": ("TPE", "PVC", "Natural Rubber", "Cork", "NBR Foam"),
            "Color": ("Purple", "Black", "Sage Green", "Blue", "Pink"),
        },
    ),
    "Headphones": (
        ("Wireless Headphones", "Earbuds", "Over-Ear Headphones"),
        {
            "Brand": ("Sony", "Bose", "Sennheiser", "JBL", "Anker", "Jabra", "Skullcandy"),
            "Connectivity": ("Bluetooth 5.0", "Bluetooth 5.3", "Wired", "USB-C"),
            "Color": ("Black", "Silver", "Midnight Blue", "White", "Rose Gold"),
        },
    ),
    "Water Bottles": (
        ("Water Bottle", "Insulated Bottle", "Sports Bottle"),
        {
            "Brand": ("Hydro Flask", "Nalgene", "CamelBak", "Contigo", "Yeti", "Takeya"),
            "Capacity": ("18 oz", "24 oz", "32 oz", "40 oz", "64 oz"),
            "Material": ("Stainless Steel", "Tritan", "Glass", "Aluminum"),
            "Color": ("Black", "White", "Pacific", "Lilac", "Olive"),
        },
    ),
    "Desk Lamps": (
        ("LED Desk Lamp", "Table Lamp", "Reading Lamp"),
        {
            "Brand": ("TaoTronics", "BenQ", "Lepower", "Globe Electric", "Ikea"),
            "Light Color": ("Warm White", "Cool White", "Daylight", "Adjustable"),
            "Material": ("Metal", "Aluminum", "Plastic", "Wood"),
        },
    ),
    "Kitchen Knives": (
        ("Chef Knife", "Santoku Knife", "Paring Knife"),
        {
            "Brand": ("Wusthof", "Victorinox", "Shun", "Henckels", "Mercer", "Global"),
            "Blade Length": ("3.5 Inch", "6 Inch", "7 Inch", "8 Inch", "10 Inch"),
            "Blade Material": ("High Carbon Stainless Steel", "Damascus Steel", "Ceramic", "VG-10"),
        },
    ),
}
#: Values no product of any split has: a published taxonomy lists them too (distractors).
DISTRACTORS: dict[str, tuple[str, ...]] = {
    "Color": ("Mauve", "Coral", "Mint"),
    "Brand": ("Acmecorp", "Northwind"),
    "Material": ("Bamboo", "Hemp"),
}
FILLERS = (
    "Pack of 2",
    "2023 Model",
    "with Carry Strap",
    "for Home and Office",
    "Gift Idea",
    "Premium",
    "New",
)


@dataclass(frozen=True)
class MaveSplit:
    train: Path
    test: Path
    taxonomy: Path
    unseen: frozenset[tuple[str, str]]  # (attribute, value) pairs only test products have


def _zipf(rng: np.random.Generator, k: int) -> int:
    weights = 1.0 / (1.0 + np.arange(k)) ** 0.9
    return int(rng.choice(k, p=weights / weights.sum()))


def _product(rng: np.random.Generator, pid: str, category: str, pools: dict[str, tuple[str, ...]]) -> dict:
    nouns, _ = CATEGORIES[category]
    stated: list[tuple[str, str]] = []
    for attribute, values in pools.items():
        if attribute == "Brand" or rng.random() < 0.65:  # titles state most, not all, attributes
            stated.append((attribute, values[_zipf(rng, len(values))]))
    brand = [v for a, v in stated if a == "Brand"]
    others = [(a, v) for a, v in stated if a != "Brand"]
    parts: list[str] = brand + [f"{rng.integers(10, 99)}{'ABCX'[rng.integers(4)]}"]
    head = [v for _, v in others[: len(others) // 2 + 1]]
    tail = [v for _, v in others[len(others) // 2 + 1 :]]
    parts += head + [str(nouns[rng.integers(len(nouns))])]
    title = " ".join(parts)
    if tail:
        title += ", " + ", ".join(tail)
    if rng.random() < 0.5:
        title += " - " + FILLERS[rng.integers(len(FILLERS))]
    attributes = []
    for attribute in CATEGORIES[category][1]:
        values = [v for a, v in stated if a == attribute]
        evidences = []
        for value in values:
            begin = title.find(value)
            evidences.append({"value": value, "pid": 0, "begin": begin, "end": begin + len(value)})
        attributes.append({"key": attribute, "evidences": evidences})  # [] = MAVE's negative
    return {
        "id": pid,
        "category": category,
        "paragraphs": [{"text": title, "source": "title"}],
        "attributes": attributes,
    }


def write_mave_split(
    directory: Path, n_train: int = 400, n_test: int = 150, unseen_share: float = 0.25, seed: int = 0
) -> MaveSplit:
    """Write train.jsonl, test.jsonl and taxonomy.csv into `directory` (see the module docstring).

    `unseen_share` of each attribute's values (at least one where an attribute has >= 4) occur only
    in test products: the zero-shot slice."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    unseen: set[tuple[str, str]] = set()
    train_pools: dict[str, dict[str, tuple[str, ...]]] = {}
    test_pools: dict[str, dict[str, tuple[str, ...]]] = {}
    for category, (_, attributes) in CATEGORIES.items():
        train_pools[category], test_pools[category] = {}, {}
        for attribute, values in attributes.items():
            order = [values[k] for k in rng.permutation(len(values))]
            n_new = max(1 if len(values) >= 4 else 0, int(round(unseen_share * len(values))))
            new, old = order[:n_new], order[n_new:]
            unseen |= {(attribute, v) for v in new}
            train_pools[category][attribute] = tuple(old)
            test_pools[category][attribute] = tuple(old + new)  # new values are the rarer ones
    # a value that is new in one category but used by another's train products is not unseen
    used = {(a, v) for pools in train_pools.values() for a, vs in pools.items() for v in vs}
    unseen -= used
    names = list(CATEGORIES)
    for path, n, pools, prefix in (
        (directory / "train.jsonl", n_train, train_pools, "TR"),
        (directory / "test.jsonl", n_test, test_pools, "TE"),
    ):
        with path.open("w", encoding="utf-8") as out:
            for k in range(n):
                category = names[int(rng.integers(len(names)))]
                out.write(json.dumps(_product(rng, f"{prefix}{k:05d}", category, pools[category])) + "\n")
    taxonomy = directory / "taxonomy.csv"
    pairs = sorted(
        {(a, v) for _, attributes in CATEGORIES.values() for a, vs in attributes.items() for v in vs}
        | {(a, v) for a, vs in DISTRACTORS.items() for v in vs}
    )
    with taxonomy.open("w", encoding="utf-8") as out:
        out.write("attribute,value\n")
        for a, v in pairs:
            out.write(f'"{a}","{v}"\n')
    return MaveSplit(directory / "train.jsonl", directory / "test.jsonl", taxonomy, frozenset(unseen))
