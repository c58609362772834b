"""Per-user ring buffer of the last N clicks (item, ts): the state that carries the sequence signal over days."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class History:
    items: np.ndarray  # int32 [n_users, N], -1 = empty
    ts: np.ndarray  # int64 [n_users, N], epoch ms of the click
    count: np.ndarray  # int64 [n_users], clicks ever pushed

    @classmethod
    def empty(cls, n_users: int, length: int) -> History:
        return cls(
            np.full((n_users, length), -1, dtype=np.int32),
            np.zeros((n_users, length), dtype=np.int64),
            np.zeros(n_users, dtype=np.int64),
        )

    def copy(self) -> History:
        return History(self.items.copy(), self.ts.copy(), self.count.copy())

    @property
    def length(self) -> int:
        return self.items.shape[1]

    def nbytes(self) -> int:
        return self.items.nbytes + self.ts.nbytes + self.count.nbytes

    def recent(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items, ts) of each user's remembered clicks, most recent first; item -1 = empty slot."""
        n = self.length
        count = self.count[users]
        back = np.arange(n)
        slot = (count[:, None] - 1 - back[None, :]) % n
        valid = back[None, :] < np.minimum(count, n)[:, None]
        rows = users[:, None]
        return np.where(valid, self.items[rows, slot], -1), np.where(valid, self.ts[rows, slot], 0)

    def push(self, users: np.ndarray, clicked: np.ndarray, items: np.ndarray, ts: np.ndarray) -> None:
        """Append the clicks of one request per user: clicked/items are [m, S] in position order."""
        n = self.length
        order_in_request = np.cumsum(clicked, axis=1) - 1
        rows, cols = np.nonzero(clicked)
        user = users[rows]
        slot = (self.count[user] + order_in_request[rows, cols]) % n
        self.items[user, slot] = items[rows, cols]
        self.ts[user, slot] = ts[rows]
        self.count[users] += clicked.sum(axis=1)
