"""``nitro-llm bench --report`` rewrites BENCHMARKS.md but keeps the sections measured by hand."""

from __future__ import annotations

from nitro_llm_dev.bench.speed.report import KEPT_MARKER, write_report


def test_report_keeps_the_sections_after_the_marker(tmp_path):
    kept = f"{KEPT_MARKER}\n\n## Enclave image\n\n| image size | 299 MiB |\n"
    (tmp_path / "BENCHMARKS.md").write_text("# Benchmarks\n\nold numbers\n\n" + kept)
    text = write_report({"finished_at": "2026-01-01 00:00:00 UTC"}, tmp_path).read_text()
    assert "old numbers" not in text
    assert text.endswith(kept) and text.count(KEPT_MARKER) == 1
    assert write_report({"finished_at": "2026-01-02 00:00:00 UTC"}, tmp_path).read_text().endswith(kept)
