"""The page template `dvc plots show` renders into (pipelines/services/plots.py): vega inside, no CDN."""

import os

import pytest
from dvc_render.html import HTML

from pipelines.services.plots import page_template, write_plots_template

pytestmark = pytest.mark.unit


def test_the_template_carries_vega_and_dvc_adds_no_cdn_script():
    template = page_template()
    assert template.count("{plot_divs}") == 1 and "{scripts}" not in template
    page = HTML(template).with_scripts('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>')
    page.with_element("<div id='p'></div>")
    html = page.embed()
    assert "cdn.jsdelivr.net" not in html and "<div id='p'></div>" in html
    assert "window.vegaEmbed=" in html and len(html) > 500_000  # the three libraries, inline


def test_it_is_written_once_then_left_alone(tmp_path):
    path = tmp_path / ".dvc" / "plots.html"
    assert write_plots_template(path) is True
    first = path.stat().st_mtime_ns
    os.utime(path, ns=(first - 10**9, first - 10**9))
    assert write_plots_template(path) is False and path.stat().st_mtime_ns == first - 10**9
    path.write_text("<html>{plot_divs}</html>")  # another vl-convert's (no stamp): rewritten
    assert write_plots_template(path) is True and "window.vegaEmbed=" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["plots.html"]  # no temp file left
