"""Sphinx configuration of the skpolysrl documentation.

Build (warnings are errors, as in CI through tests/test_docs.py)::

    pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

Offline: no intersphinx, the default (alabaster) theme, no extension that downloads.
"""

import os
import re
import sys

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # document the source tree, not some other installed copy

import skpolysrl  # noqa: E402

project = "skpolysrl"
author = "skpolysrl developers"
copyright = "skpolysrl developers, BSD-3-Clause"
version = release = skpolysrl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "alabaster"
html_title = f"skpolysrl {release}"
html_static_path = []

# autodoc: numpydoc-style docstrings through napoleon; members in source order; the
# heavy runtime dependencies are real imports (the docs show the installed API).
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
autodoc_inherit_docstrings = False  # matminer's and torch's docstrings are not ours to check
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# MyST: GitHub-style Markdown (docs/method.md). No math extension: MathJax would be
# fetched from a CDN by the reader's browser, and the pages are meant to work offline.
myst_heading_anchors = 3


class CliHelp(SphinxDirective):
    """``.. skpolysrl-cli-help:: [subcommand]``: the ``--help`` text of the skpolysrl CLI.

    Generated from ``skpolysrl.cli.build_parser()`` at build time, so the page always
    matches the code. With ``:optional:``, a subcommand that does not exist (yet)
    gives a short note instead of an error.
    """

    optional_arguments = 1
    has_content = False
    option_spec = {"optional": directives.flag}

    def run(self):
        from skpolysrl import cli

        self.env.note_dependency(os.path.abspath(cli.__file__))
        parser = cli.build_parser()
        command = self.arguments[0] if self.arguments else None
        if command is not None:
            choices = {}
            for action in parser._actions:
                if getattr(action, "choices", None) and hasattr(action, "add_parser"):
                    choices.update(action.choices)
            if command not in choices:
                if "optional" in self.options:
                    text = f"(`skpolysrl {command}` is not in this version of skpolysrl.)"
                    return [nodes.paragraph(text, text)]
                raise self.error(f"skpolysrl has no subcommand {command!r}; known: {sorted(choices)}")
            parser = choices[command]
        saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
        os.environ["COLUMNS"], os.environ["NO_COLOR"] = "90", "1"
        try:
            text = parser.format_help()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


_SHAPE = re.compile(r"shape \(([^()`]*)\)")
_TRAILING_UNDERSCORE = re.compile(r"(\w)_(?=[\s,)]|$)")


def _escape_shape_names(app, what, name, obj, options, lines):
    """``of shape (n_features_in_,)``: in reST a trailing underscore makes a link; escape it.

    scikit-learn style docstrings name fitted attributes (``n_features_in_``) in shapes
    of parameter types, which numpydoc renders literally and napoleon does not.
    """
    for i, line in enumerate(lines):
        if "shape (" in line:
            lines[i] = _SHAPE.sub(lambda m: "shape (" + _TRAILING_UNDERSCORE.sub(r"\1\\_", m.group(1)) + ")", line)


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing setters (``set_fit_request``, ...)."""
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _escape_shape_names, priority=400)
    app.connect("autodoc-skip-member", _skip_member)
    app.add_directive("skpolysrl-cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
