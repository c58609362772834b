"""Encoder throughput: items/s of the text (minilm) and image (image_cnn) encoders, and of the cache.

For each device (cpu, and cuda when torch sees one): the text encoder over the catalogue's titles
(model load excluded: measured separately), the image CNN's fit on the catalogue and its encoding of
every image; then the embedding cache's hit path (`run_encoder` on an unchanged catalogue: hashing
+ Parquet lookup, no encoder call). Writes benchmarks/results/encoders.json with the machine, the
date and the load average before and after (the build machines are shared: a high load average
explains slow figures).

    .venv/bin/python benchmarks/bench_encoders.py [--profile small] [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import write_result


def _best_rate(fn, items: int, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {
        "items": items,
        "seconds_best": round(min(times), 4),
        "seconds_median": round(statistics.median(times), 4),
        "items_per_s_best": round(items / min(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from ctr_image.encoder import ImageCnnConfig, ImageCnnEncoder
    from ctr_minilm import encoder as minilm

    from ctr_dagster.datagen import build_world, profile
    from ctr_dagster.embeddings.encoding import run_encoder

    load_before = os.getloadavg()
    world = build_world(profile(args.profile))
    items, attributes = world.items(), world.item_attributes()
    n = items.num_rows
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    figures: dict[str, object] = {
        "profile": args.profile,
        "items": n,
        "torch_threads": torch.get_num_threads(),
    }

    for device in devices:
        started = time.perf_counter()
        minilm.load_model(device)
        figures[f"text_minilm_{device}_load_s"] = round(time.perf_counter() - started, 3)
        text = minilm.MinilmEncoder(minilm.MinilmConfig(device=device))
        text.encode(items.slice(0, 32))  # warm-up
        figures[f"text_minilm_{device}"] = _best_rate(lambda text=text: text.encode(items), n, args.repeats)

        image = ImageCnnEncoder(ImageCnnConfig(device=device))
        started = time.perf_counter()
        image.fit(items, attributes)
        figures[f"image_cnn_{device}_fit_s"] = round(time.perf_counter() - started, 3)
        image.encode(items.slice(0, 32))
        figures[f"image_cnn_{device}"] = _best_rate(lambda image=image: image.encode(items), n, args.repeats)

    with tempfile.TemporaryDirectory() as tmp:
        roots = {"cache_root": Path(tmp) / "cache", "state_root": Path(tmp) / "state", "log": lambda m: None}
        run_encoder(minilm.MinilmEncoder, {"device": "cpu"}, items, None, **roots)  # fills the cache

        def hit() -> None:
            out = run_encoder(minilm.MinilmEncoder, {"device": "cpu"}, items, None, **roots)
            assert out.encoded == 0 and out.cached == n

        figures["cache_hit_text"] = _best_rate(hit, n, args.repeats)
    figures["load_average_before"] = [round(v, 2) for v in load_before]
    figures["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    write_result("encoders", figures)


if __name__ == "__main__":
    main()
