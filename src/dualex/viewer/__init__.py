"""Looking at explanations: a local web viewer (`serve`) and a self-contained HTML export (`export_html`).

Both read ``*.safetensors`` files written by `dualex.Explanation.save` (one file, a folder of them, a
``dualex evaluate`` run directory, or several of these together under short labels) and draw them with
the same static page (vanilla JavaScript and canvas, no third-party code): click or drag over caption
words to see their image map, draw a box on the image to colour the caption, switch between the methods
stored for a pair, compare two of them side by side, read the score and the completeness figures.
"""

from __future__ import annotations

from dualex.viewer.export import export_html
from dualex.viewer.server import make_server, serve

__all__ = ["export_html", "make_server", "serve"]
