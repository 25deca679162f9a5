"""Sphinx configuration of the dtlspeer documentation site.

Build (the ``docs`` extra pins Sphinx, MyST and the theme)::

    pip install ".[docs]"
    python -m sphinx -W --keep-going -n -b html docs/site build/docs

``-W`` turns every warning into an error and ``-n`` (nitpicky) makes every
cross-reference resolve: a broken link, a public object without a docstring
or missing from the reference fails the build (``_ext/dtlspeer_docs.py``).
The pages take their text from README.md and docs/*.md (one source of truth,
see ``_ext/dtlspeer_docs.py``) and from the docstrings (autodoc).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import dtlspeer  # noqa: E402 (the installed package, or PYTHONPATH=src)

project = "dtlspeer"
author = "the dtlspeer authors"
copyright = "the dtlspeer authors"
release = version = dtlspeer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "dtlspeer_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# Every cross-reference must resolve (-n); what stays unresolved on purpose:
nitpicky = True
# the standard library in signatures and docstrings (no intersphinx: the
# build needs no network; built-in types and typing resolve without it), and
# private base classes shown by show-inheritance (implementation details).
STDLIB = r"abc|array|asyncio|collections\.abc|datetime|enum|os|socket|ssl|threading|types"
nitpick_ignore_regex = [
    (r"py:(class|func|meth|exc|data|attr)", rf"({STDLIB})\..*"),
    ("py:func", r"open"),
    ("py:class", r"dtlspeer\.(\w+\.)*_\w+"),
]

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "both"  # the class docstring and __init__'s

html_theme = "alabaster"
html_title = f"dtlspeer {release}"
html_theme_options = {"description": "Godot-style UDP and DTLS for Python game servers"}
