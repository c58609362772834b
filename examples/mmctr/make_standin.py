"""Write a stand-in for the WWW'25 MMCTR challenge data (MicroLens-1M based): `train.parquet`,
`valid.parquet`, `test.parquet` and `item_info.parquet`, in the challenge's own layout.

Why a stand-in: nothing is downloaded at run time, and the challenge files are large. The files here
have the real layout and types, so `mapping.yaml` works unchanged on the real ones:

* train / valid / test: `user_id` (int64), `item_seq` (list<int64>: the user's earlier items, most
  recent last, left-padded with 0 to a fixed length), `likes_level` and `views_level` (int64,
  0..10: the target item's popularity buckets), `item_id` (int64: the target), `label` (float64 0/1);
  no timestamp, no position, no impression id;
* item_info: `item_id` (int64; row 0 is the padding row, item_id 0), `item_tags` (list<int64> of
  5 tag ids, 0 = padding), `item_emb_d128` (list<float32> of 128: a multimodal embedding).

Labels are learnable from what the files hold: each item has a topic that its tags and its vector
show, each user prefers a few topics, and the click probability rises with the user's taste for the
target's topic, with the target's similarity to the items in `item_seq`, with its quality and with
its likes level.

    python examples/mmctr/make_standin.py            # rewrites the four files (seeded: identical output)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TOPICS = 8
TAGS_PER_TOPIC = 6  # topic t owns tag ids 1 + t*6 .. 6 + t*6
GENERAL_TAGS = 12  # shared tags after the topic tags
TAG_SLOTS = 5  # item_tags is a fixed list of 5 ids, 0 = padding
DIM = 128
SEQ_LEN = 20  # item_seq length (the challenge's loader keeps up to 64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def write_standin(
    folder: Path,
    users: int = 300,
    items: int = 400,
    train: int = 6_000,
    valid: int = 800,
    test: int = 800,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the four files into `folder`; returns their paths by name (train, valid, test, item_info)."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, TOPICS, items)
    centroids = rng.normal(0, 1, (TOPICS, DIM))
    vectors = 0.7 * centroids[topic] + rng.normal(0, 0.8, (items, DIM))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (np.round(vectors * 1024) / 1024).astype(np.float32)  # 1/1024 steps: a small file
    quality = rng.normal(0, 0.5, items)
    popularity = rng.pareto(1.5, items) + 0.1
    tags = np.zeros((items, TAG_SLOTS), dtype=np.int64)
    for i in range(items):
        own = 1 + topic[i] * TAGS_PER_TOPIC + rng.choice(TAGS_PER_TOPIC, rng.integers(1, 3), replace=False)
        general = 1 + TOPICS * TAGS_PER_TOPIC + rng.choice(GENERAL_TAGS, rng.integers(0, 3), replace=False)
        found = [*own.tolist(), *general.tolist()]
        tags[i, : len(found)] = found
    taste = rng.dirichlet(np.full(TOPICS, 0.4), users)  # each user's preference over topics
    activity = rng.pareto(1.2, users) + 0.3
    history: list[list[int]] = []  # item ids (1-based) each user clicked, oldest first
    for u in range(users):
        p = popularity * (0.05 + taste[u, topic])
        start = rng.choice(items, rng.integers(0, 12), replace=False, p=p / p.sum())
        history.append([int(i) + 1 for i in start])

    def rows(n: int) -> pa.Table:
        out = {k: [] for k in ("user_id", "item_seq", "likes_level", "views_level", "item_id", "label")}
        who = rng.choice(users, n, p=activity / activity.sum())
        for u in who.tolist():
            p = popularity * (0.3 + taste[u, topic])
            i = int(rng.choice(items, p=p / p.sum()))
            seen = history[u][-SEQ_LEN:]
            similarity = float(vectors[np.array(seen) - 1].mean(axis=0) @ vectors[i]) if seen else 0.0
            views = int(np.clip(np.round(2.5 * np.log1p(popularity[i]) + rng.normal(0, 1)), 0, 10))
            likes = int(np.clip(np.round(views * _sigmoid(quality[i] * 2) + rng.normal(0, 1)), 0, 10))
            logit = -1.6 + 3.0 * taste[u, topic[i]] + 2.5 * similarity + 0.8 * quality[i] + 0.12 * (likes - 3)
            clicked = bool(rng.random() < _sigmoid(logit))
            out["user_id"].append(u + 1)
            out["item_seq"].append([0] * (SEQ_LEN - len(seen)) + seen)
            out["likes_level"].append(likes)
            out["views_level"].append(views)
            out["item_id"].append(i + 1)
            out["label"].append(float(clicked))
            if clicked:
                history[u].append(i + 1)
        return pa.table(
            {
                "user_id": pa.array(out["user_id"], pa.int64()),
                "item_seq": pa.array(out["item_seq"], pa.list_(pa.int64())),
                "likes_level": pa.array(out["likes_level"], pa.int64()),
                "views_level": pa.array(out["views_level"], pa.int64()),
                "item_id": pa.array(out["item_id"], pa.int64()),
                "label": pa.array(out["label"], pa.float64()),
            }
        )

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.parquet" for name in ("train", "valid", "test", "item_info")}
    for name, n in (("train", train), ("valid", valid), ("test", test)):
        pq.write_table(rows(n), paths[name], compression="zstd")
    item_info = pa.table(
        {
            "item_id": pa.array(np.arange(items + 1), pa.int64()),  # row 0: the padding item
            "item_tags": pa.array([[0] * TAG_SLOTS, *tags.tolist()], pa.list_(pa.int64())),
            "item_emb_d128": pa.array([[0.0] * DIM, *vectors.tolist()], pa.list_(pa.float32())),
        }
    )
    pq.write_table(item_info, paths["item_info"], compression="zstd", use_dictionary=["item_id"])
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(__file__).parent)
    parser.add_argument("--train", type=int, default=6_000)
    args = parser.parse_args()
    written = write_standin(args.folder, train=args.train)
    print("wrote " + ", ".join(str(p) for p in written.values()))
