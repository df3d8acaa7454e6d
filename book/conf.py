"""Sphinx configuration of the rendered book (`make book`; see tools/bookbuild.py, which stages the sources).

The stack is Jupyter Book 1's without its CLI: MyST-NB reads the chapters' MyST-markdown notebooks as they are
and executes them, sphinx-book-theme lays them out, autodoc writes the API reference. Everything a page loads
is served from the build itself (MathJax and the widget manager are vendored from npm), so the book works
offline, from file://.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bookbuild  # noqa: E402

# Kernels inherit this process's environment: the chapters run in the fast profile unless told otherwise,
# exactly as under pytest (conftest.py).
os.environ.setdefault("GLIDE_EDU_PROFILE", "fast")

project = "glide-edu"
author = "the glide-edu authors"
copyright = "the glide-edu authors, MIT licence"  # noqa: A001
root_doc = "index"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "bookbuild",  # folds the exercises' solutions, drops CDN links from cell outputs
]
exclude_patterns = ["**/.ipynb_checkpoints"]

# ---- MyST and notebook execution
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "substitution"]
myst_substitutions = {"profile": os.environ["GLIDE_EDU_PROFILE"]}
nb_execution_mode = "force"
nb_execution_timeout = 300  # per cell, as under pytest (--nbval-cell-timeout=300)
nb_execution_raise_on_error = True  # a cell error fails the build
nb_execution_show_tb = True
nb_execution_in_temp = False  # run in the chapter's folder (its staged copy), as nbval does
nb_merge_streams = True
# The widgets' state is embedded (nbclient stores it); the HTML manager that renders it is served locally.
nb_ipywidgets_js = {bookbuild.WIDGETS_JS: {}}

# ---- math: MathJax 3 from _static (vendored), SVG output
mathjax_path = bookbuild.MATHJAX_PATH

# ---- API reference
# ignore-module-all: a package that re-exports names in __all__ (glide_edu.pipelines) would document them a
# second time, and every cross-reference to them would become ambiguous; each object is documented once,
# on the page of the module that defines it.
autodoc_default_options = {"member-order": "bysource", "ignore-module-all": True}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# ---- HTML
html_theme = "sphinx_book_theme"
html_title = "glide-edu"
html_static_path = ["_static", str(bookbuild.STATIC_VENDOR_DIR)]
html_css_files = ["book.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_copy_source = True
