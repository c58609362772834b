"""Fixed vocabularies of the synthetic marketplace: categories, attribute values, shapes, textures.

Kept as plain data so titles, images and the oracle all read one source. Values are single words,
unique across attributes and disjoint from nouns and filler words, so "is this value stated in the
title" is a whole-word match and nothing else (the title tests rely on it).
"""

from __future__ import annotations

from dataclasses import dataclass

ATTRIBUTES: tuple[str, ...] = ("brand", "colour", "material", "style")

#: Attribute values shared by the training categories (and usable by held-out ones).
SHARED_VALUES: dict[str, tuple[str, ...]] = {
    "brand": (
        "Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay",
        "Wayne", "Soylent", "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Aperture", "Monarch",
    ),
    "colour": (
        "red", "blue", "green", "black", "white", "grey", "yellow", "orange", "purple", "pink",
        "brown", "navy",
    ),
    "material": (
        "cotton", "leather", "wool", "denim", "polyester", "metal", "ceramic", "glass", "wood",
        "plastic", "canvas", "silk",
    ),
    "style": ("casual", "formal", "sporty", "vintage", "minimalist", "rustic", "modern", "elegant"),
}  # fmt: skip

#: Values that occur only in held-out categories when the `zero_shot` knob is on.
ZERO_SHOT_VALUES: dict[str, tuple[str, ...]] = {
    "brand": ("Zentro", "Quillon", "Mirabel"),
    "colour": ("teal", "maroon", "olive", "coral"),
    "material": ("bamboo", "cork", "hemp"),
    "style": ("boho", "gothic"),
}

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40), "blue": (40, 90, 210), "green": (40, 150, 60), "black": (20, 20, 20),
    "white": (255, 255, 255), "grey": (128, 128, 128), "yellow": (240, 210, 40),
    "orange": (240, 130, 30), "purple": (130, 50, 160), "pink": (240, 130, 180),
    "brown": (120, 75, 40), "navy": (20, 30, 90), "teal": (20, 140, 140), "maroon": (110, 20, 40),
    "olive": (120, 120, 30), "coral": (250, 110, 90),
}  # fmt: skip

#: Light backgrounds, none equal to any fill colour (images are judged by their non-background pixels).
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((236, 236, 230), (230, 234, 240), (240, 236, 228))

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "hexagon", "pentagon", "star", "cross",
    "ring", "octagon", "bar", "arrow",
)  # fmt: skip

#: Texture per material ("plain" = no material); unique so the image really shows the material.
TEXTURES: tuple[str, ...] = (
    "plain", "hstripes", "vstripes", "dstripes", "dots", "checks", "grid", "hstripes_wide",
    "vstripes_wide", "dstripes_wide", "dots_wide", "checks_wide", "grid_wide", "zigzag", "cstripes",
    "border",
)  # fmt: skip


@dataclass(frozen=True)
class CategorySpec:
    """One category: its noun, image shape, typical price and which attributes/values it uses."""

    name: str
    nouns: tuple[str, ...]
    shape: str
    price: float
    attributes: tuple[str, ...]
    materials: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()


_ALL_STYLES = SHARED_VALUES["style"]

REGULAR_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("shirt", ("shirt", "tee"), "circle", 30, ATTRIBUTES,
                 ("cotton", "polyester", "silk", "denim"), ("casual", "formal", "sporty", "vintage")),
    CategorySpec("sneakers", ("sneakers", "trainers"), "triangle", 85, ATTRIBUTES,
                 ("leather", "canvas", "polyester"), ("sporty", "casual", "vintage", "minimalist")),
    CategorySpec("mug", ("mug", "cup"), "square", 12, ("brand", "colour", "material"),
                 ("ceramic", "glass", "metal", "plastic")),
    CategorySpec("lamp", ("lamp", "light"), "diamond", 45, ATTRIBUTES,
                 ("metal", "glass", "wood", "ceramic"), ("modern", "rustic", "minimalist", "vintage")),
    CategorySpec("backpack", ("backpack", "rucksack"), "hexagon", 60, ("brand", "colour", "material"),
                 ("canvas", "leather", "polyester")),
    CategorySpec("sofa", ("sofa", "couch"), "bar", 650, ATTRIBUTES,
                 ("leather", "wool", "cotton", "wood"), ("modern", "rustic", "elegant", "minimalist")),
    CategorySpec("watch", ("watch", "timepiece"), "octagon", 150, ATTRIBUTES,
                 ("metal", "leather", "plastic"), ("elegant", "sporty", "formal", "minimalist")),
    CategorySpec("jacket", ("jacket", "coat"), "pentagon", 120, ATTRIBUTES,
                 ("denim", "leather", "wool", "polyester"), ("casual", "formal", "vintage", "sporty")),
    CategorySpec("headphones", ("headphones", "headset"), "ring", 90, ("brand", "colour", "style"),
                 (), ("sporty", "modern", "minimalist")),
    CategorySpec("bottle", ("bottle", "flask"), "cross", 20, ("brand", "colour", "material"),
                 ("metal", "glass", "plastic")),
)  # fmt: skip

#: Held-out categories (the last `n_heldout_categories` of these are used): zero-shot targets.
HELDOUT_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("scarf", ("scarf", "shawl"), "star", 25, ATTRIBUTES,
                 ("wool", "silk", "cotton"), ("casual", "elegant", "vintage")),
    CategorySpec("vase", ("vase", "planter"), "arrow", 35, ("colour", "material", "style"),
                 ("ceramic", "glass", "wood"), ("modern", "rustic", "elegant")),
)  # fmt: skip

FILLERS_PREFIX: tuple[str, ...] = ("New", "Premium", "Bestseller:", "Everyday", "Limited")
FILLERS_SUFFIX: tuple[str, ...] = ("- free shipping", "(2026 edition)", "- gift idea", "for daily use")

REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
REGION_P: tuple[float, ...] = (0.25, 0.2, 0.2, 0.2, 0.15)
AGE_P: tuple[float, ...] = (0.08, 0.24, 0.26, 0.2, 0.14, 0.08)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "app")
DEVICE_P: tuple[float, ...] = (0.55, 0.15, 0.30)

#: Share of requests per hour of day (UTC); evening peak, quiet nights.
HOURLY: tuple[float, ...] = (
    0.8, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.3, 1.4, 1.4, 1.5,
    1.6, 1.5, 1.4, 1.4, 1.5, 1.7, 2.0, 2.3, 2.4, 2.1, 1.7, 1.2,
)  # fmt: skip


def all_values(attribute: str) -> tuple[str, ...]:
    """Global vocabulary of one attribute: shared values first, then the zero-shot-only ones."""
    return SHARED_VALUES[attribute] + ZERO_SHOT_VALUES[attribute]


def material_texture(material: str) -> str:
    """Texture that shows `material` in the image (one per material; plain = no material)."""
    return TEXTURES[1 + all_values("material").index(material)]
