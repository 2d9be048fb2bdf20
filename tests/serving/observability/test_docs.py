"""docs/observability.md carries every alert's runbook as the code renders it, and names every series."""

from __future__ import annotations

from pathlib import Path

from serving.observability import catalogue as c
from serving.observability.alerts import AlertSettings, render_runbooks_markdown, stack_alerts
from serving.observability.queries import Scope

DOC = Path(__file__).resolve().parents[3] / "docs" / "observability.md"
BEGIN, END = "<!-- runbooks:begin -->\n", "<!-- runbooks:end -->"


def runbooks_block() -> str:
    return BEGIN + "\n" + render_runbooks_markdown(Scope(), AlertSettings()) + "\n" + END


def test_the_runbooks_section_is_the_rendered_one() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == runbooks_block(), (
        "docs/observability.md's runbooks are stale: regenerate them with "
        "python -c 'from tests.serving.observability.test_docs import write; write()'"
    )
    for rule in stack_alerts(Scope(), AlertSettings()):
        assert f"#### {rule.name} " in text


def test_the_page_names_every_series_family_it_relies_on() -> None:
    text = DOC.read_text()
    for series in (*c.TRTLLM_REQUEST_SERIES, *c.GATEWAY_SERIES, *c.KUBE_SERIES):
        assert series.name in text, series.name
    for source in c.SOURCES:
        assert f"`{source.job}`" in text and str(source.port) in text


def write() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + runbooks_block() + text[end:])
