"""`readers.prefetched`: items in order from a background thread, errors where they happened,
and an early stop ends the producer (the CSV parser runs one block ahead of its consumer)."""

import threading

import pytest

from ctr_dagster.importers.readers import prefetched


def test_items_arrive_in_order_and_the_producer_is_another_thread():
    threads = []

    def produce():
        for i in range(50):
            threads.append(threading.get_ident())
            yield i

    assert list(prefetched(produce())) == list(range(50))
    assert set(threads) == {threads[0]} and threads[0] != threading.get_ident()


def test_an_error_reaches_the_consumer_after_the_items_before_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("bad block")

    got = []
    with pytest.raises(ValueError, match="bad block"):
        for item in prefetched(produce()):
            got.append(item)
    assert got == [1, 2]


def test_stopping_early_closes_the_producer():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    items = prefetched(produce(), depth=2)
    assert next(items) == 0
    items.close()  # the consumer gives up: the producer thread is stopped and joined
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "ctr-prefetch"]
