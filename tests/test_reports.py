"""Report rendering: the ROC + reliability PNG and its inline markdown form."""

import base64

import numpy as np

from ctr_dagster import reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curves() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.2).astype(np.int8)
    return {
        "model": (labels, np.clip(0.15 + 0.3 * labels + rng.normal(0, 0.15, labels.size), 0, 1)),
        "random": (labels, rng.random(labels.size)),
    }


def test_roc_calibration_png_is_a_small_png_written_atomically(tmp_path):
    target = tmp_path / "sub" / "eval.png"
    out = reports.roc_calibration_png(_curves(), target, title="test split")
    assert out == target and target.exists()
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 1_000 < len(data) < 200_000
    assert [p.name for p in target.parent.iterdir()] == ["eval.png"]  # no temp file left behind


def test_roc_calibration_png_overwrites_and_tolerates_degenerate_curves(tmp_path):
    target = tmp_path / "eval.png"
    target.write_bytes(b"old")
    curves = {
        "one class": (np.zeros(10, dtype=np.int8), np.linspace(0, 1, 10)),
        "empty": (np.array([], dtype=np.int8), np.array([])),
        **_curves(),
    }
    reports.roc_calibration_png(curves, target)
    assert target.read_bytes().startswith(PNG_SIGNATURE)


def test_png_markdown_round_trips(tmp_path):
    target = reports.roc_calibration_png(_curves(), tmp_path / "eval.png")
    md = reports.png_markdown(target, "ROC [test]")
    prefix = "![ROC (test)](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    assert base64.b64decode(md[len(prefix) : -1]) == target.read_bytes()


def test_roc_thumbnail_is_short_enough_to_show_inline_and_ranks_by_auc():
    """The UI draws markdown inline only under 1,000 characters: the thumbnail keeps the best curves
    that fit, first by AUC, and always draws at least one."""
    from urllib.parse import unquote

    rng = np.random.default_rng(0)
    curves = {}
    for name, strength in [("weak", 0.2), ("strong", 2.0), ("middle", 0.8)] + [
        (f"extra_model_{i}", 0.5) for i in range(8)
    ]:
        y = rng.integers(0, 2, 2000)
        curves[name] = (y, 1 / (1 + np.exp(-(y * strength + rng.normal(size=2000)))))
    text = reports.roc_thumbnail_markdown(curves)
    assert text.startswith("![ROC") and len(text) < reports.INLINE_MARKDOWN_LIMIT
    svg = unquote(text.split("svg+xml,", 1)[1][:-1])
    legend = [t.split(">")[-1] for t in svg.split("</text>")[:-1]]
    assert legend[0].startswith("strong ") and legend[1].startswith("middle ")
    assert 2 <= svg.count("<polyline") < len(curves)  # as many as fit, not all eleven
    one = reports.roc_thumbnail_markdown({"only": curves["strong"]}, limit=10)
    assert one.count("<polyline") == 0 and unquote(one).count("<polyline") == 1  # at least one
    assert "no ROC" in reports.roc_thumbnail_markdown({"flat": (np.zeros(5), np.ones(5))})
