"""Write a stand-in for MovieLens-100K in RecBole's atomic-file format (`ml-100k.inter`, `ml-100k.item`).

Why a stand-in: MovieLens may not be redistributed, and nothing is downloaded at run time. The files
have the real dataset's layout (tab-separated, `name:type` headers, unix-second timestamps, ratings
1-5, space-separated genre lists) and a similar shape (943 users, 1,682 items, ratings over ~7
months, users who rate in a few bursts), so `mapping.yaml` here works unchanged on the real files:
put RecBole's `ml-100k.inter` and `ml-100k.item` in this folder instead.

    python examples/ratings/make_standin.py            # rewrites the two files (seeded: identical output)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

GENRES = [
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
]  # fmt: skip
WORDS = ["Night", "River", "Last", "City", "Love", "Dark", "Return", "Star", "Secret", "Road", "King", "Blue"]
START = 874_724_710  # 1997-09-20, where MovieLens-100K begins
DAYS = 214


def write_standin(
    folder: Path, users: int = 943, items: int = 1682, ratings: int = 30_000, days: int = DAYS, seed: int = 0
) -> None:
    """Seeded latent-factor ratings: taste = genre affinity + a low-rank term + item quality."""
    rng = np.random.default_rng(seed)
    rank = 8
    item_genre = rng.integers(0, len(GENRES), items)
    second = np.where(rng.random(items) < 0.5, rng.integers(0, len(GENRES), items), -1)
    quality = rng.normal(0, 0.6, items)
    popularity = rng.pareto(1.2, items) + 0.05
    user_genre = rng.normal(0, 0.8, (users, len(GENRES)))
    user_f, item_f = rng.normal(0, 0.45, (users, rank)), rng.normal(0, 0.45, (items, rank))
    user_bias = rng.normal(0, 0.4, users)
    activity = rng.pareto(1.0, users) + 0.2
    per_user = np.maximum(5, np.round(activity / activity.sum() * ratings)).astype(int)
    rows = []
    for u in range(users):
        first_day = rng.integers(0, days)
        sessions = np.sort(np.minimum(days - 1, first_day + rng.exponential(6, rng.integers(1, 4))))
        p = popularity * np.exp(0.4 * user_genre[u, item_genre])
        chosen = rng.choice(items, size=min(per_user[u], items), replace=False, p=p / p.sum())
        times = START + (rng.choice(sessions, len(chosen)) * 86_400 + rng.uniform(0, 7_200, len(chosen)))
        taste = (
            3.4
            + user_bias[u]
            + quality[chosen]
            + 0.7 * user_genre[u, item_genre[chosen]]
            + user_f[u] @ item_f[chosen].T
            + rng.normal(0, 0.6, len(chosen))
        )
        stars = np.clip(np.round(taste), 1, 5).astype(int)
        rows += [(u + 1, i + 1, s, int(t)) for i, s, t in zip(chosen, stars, times, strict=True)]
    rows.sort(key=lambda r: (r[3], r[0]))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "ml-100k.inter", "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        out.writelines(f"{u}\t{i}\t{s}\t{t}\n" for u, i, s, t in rows)
    with open(folder / "ml-100k.item", "w", encoding="utf-8") as out:
        out.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(items):
            genres = [GENRES[item_genre[i]]] + (
                [GENRES[second[i]]] if second[i] >= 0 and second[i] != item_genre[i] else []
            )
            title = " ".join(rng.choice(WORDS, 2, replace=False))
            year = "" if rng.random() < 0.01 else str(int(rng.integers(1930, 1998)))
            out.write(f"{i + 1}\t{title} {i + 1}\t{year}\t{' '.join(genres)}\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(__file__).parent)
    parser.add_argument("--ratings", type=int, default=30_000)
    args = parser.parse_args()
    write_standin(args.folder, ratings=args.ratings)
    print(f"wrote {args.folder / 'ml-100k.inter'} and {args.folder / 'ml-100k.item'}")
