"""The page `dvc plots show` writes, with vega, vega-lite and vega-embed inside it.

DVC's own page loads the three from a CDN and stays blank offline (on a cluster node, behind a
firewall, on this project's machines). ``.dvc/config`` names ``.dvc/plots.html`` as the page's
template (``plots.html_template``, relative to ``.dvc/``); the train stage writes it beside the loss
curves, from vl-convert's bundle of the three libraries (a PyPI wheel; nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.common.fsutil import atomic_write_text

TEMPLATE = Path(".dvc") / "plots.html"

# DVC fills {plot_divs} (one div and one script per plot, calling vegaEmbed). Without {scripts} in
# the template it adds no CDN script tags.
PAGE = """<!DOCTYPE html>
<!-- {stamp} -->
<html>
<head>
<meta charset="utf-8">
<title>percept: DVC plots</title>
<script>{bundle}</script>
<style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def _stamp() -> str:
    from importlib.metadata import version

    return f"vega from vl-convert-python {version('vl-convert-python')}"


def page_template() -> str:
    """The template's text: the page with the libraries' bundle (vegaEmbed, vega, vegaLite on window)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()  # ~2 s
    if "</script" in bundle.lower():  # would end the script element early
        raise RuntimeError("vl-convert's bundle holds '</script': it cannot be inlined")
    return PAGE.format(stamp=_stamp(), bundle=bundle)


def write_plots_template(path: Path = TEMPLATE) -> bool:
    """Write the template unless it is there from the same vl-convert; whether it wrote."""
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            if _stamp() in "".join(fh.readline() for _ in range(2)):
                return False
    atomic_write_text(path, page_template())
    return True
