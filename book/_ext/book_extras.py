"""Sphinx extension for this book (loaded through ``_config.yml``'s ``sphinx.local_extensions``).

1. ``{chapter-map}``: the landing page's diagram of the chapters.
2. The API reference (``book/api.md``): the line ``% resnet-edu:api`` is replaced, when the page is
   read, by one autodoc section per module of ``resnet_edu`` and a summary table of the names in
   ``resnet_edu.__all__``, so a new module or export appears without editing the page.
3. A fix for duplicated inline scripts on every page (see ``_dedupe_inline_scripts``).
4. The pybtex style ``authoryear`` (``bibtex_default_style``): the bibliography's labels read
   "He et al., 2016", like the author-year citations in the text, instead of "HZRS16a".
5. Vega and Vega-Lite (vendored in ``_static/thirdparty/vega/``) on the pages that hold a formula
   explorer (``resnet_edu.explorers.formula_chart``), and only there (about 780 KB, cached by the
   browser after the first such page). They are added before require.js (priority 200 < 500 of
   myst-nb's widget scripts): loaded after it, their UMD bundles would register as anonymous AMD
   modules instead of setting ``window.vega``/``window.vegaLite``, and the charts would not draw.
6. The environment of the notebooks' kernels (they inherit this process's environment):
   ``RESNET_EDU_BOOK_BUILD=1`` tells ``resnet_edu.explorers`` to precompute every explorer state
   for the static HTML (in Jupyter and Colab the same cells show live panels), and ``IPYTHONDIR``
   points at ``_build/.ipython``, whose kernel config drops two log lines every kernel of a build
   prints and the reader cannot act on: ipykernel's "Kernel is running over TCP without
   encryption" (the kernel talks to the build over 127.0.0.1) and "KeyboardInterrupt caught in
   kernel" (jupyter_client interrupts each kernel as part of shutting it down).

The chapter diagram is an inline SVG drawn when the book is built, from ``_toc.yml`` (parts and their
order) and each chapter's first ``# `` heading, so it never disagrees with the table of contents.
Each box links to its chapter. The page that uses the directive is re-read whenever ``_toc.yml``
or a chapter it shows changes. Colours come from classes styled in ``_static/resnet-edu.css``
(light and dark theme).

Options: ``:exclude:`` a comma-separated list of part captions to leave out (e.g. ``Reference``).
"""

from __future__ import annotations

import html
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.osutil import relative_uri

# geometry of the drawing (SVG user units; the SVG scales to the page width)
WIDTH = 400
PATH_X = 26  # the vertical learning path
BOX_X = 48
BOX_W = WIDTH - BOX_X - 8
FONT = 15
LINE_H = 19
CHARS_PER_LINE = 37
PART_HEAD = 30
GAP = 10
N_PART_STYLES = 6


def _plain(text: str) -> str:
    """Markdown heading -> plain text: drop code ticks, emphasis, and link targets."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\{[a-z:]+\}`([^`]*)`", r"\1", text)
    return text.replace("`", "").replace("**", "").replace("*", "").strip()


def _title(path: Path) -> str:
    """The first level-1 heading of a notebook or markdown page (file stem if there is none)."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        sources = []
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "markdown":
                continue
            src = cell.get("source", "")
            sources.append("".join(src) if isinstance(src, list) else src)
        text = "\n".join(sources)
    else:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    m = re.search(r"^# +(.+?)\s*$", text, re.M)
    if not m:
        return path.stem
    from docutils.utils.smartquotes import smartyPants

    return smartyPants(_plain(m.group(1)), "qDe", "en")  # as Sphinx renders the heading


def _label(docname: str) -> str:
    """The number in a chapter's circle: from its file name (``03_x`` -> 3, ``ex03_x`` -> E3), else none."""
    m = re.match(r"(ex)?(\d+)_", docname.rsplit("/", 1)[-1])
    if not m:
        return ""
    return ("E" if m.group(1) else "") + str(int(m.group(2)))


def _source(srcdir: Path, file: str) -> Optional[Path]:
    for suffix in ("", ".ipynb", ".md"):
        p = srcdir / f"{file}{suffix}"
        if p.is_file():
            return p
    return None


def read_parts(srcdir: Path, exclude: Tuple[str, ...] = ()) -> List[Dict]:
    """``[{"caption", "chapters": [{"docname", "title", "path"}]}]`` from ``_toc.yml``."""
    toc = yaml.safe_load((srcdir / "_toc.yml").read_text(encoding="utf-8")) or {}
    parts = []
    for part in toc.get("parts", []) or []:
        caption = part.get("caption", "")
        if caption in exclude:
            continue
        chapters = []
        for entry in part.get("chapters", []) or []:
            file = entry.get("file")
            if not file:
                continue
            path = _source(srcdir, file)
            if path is None:
                continue
            docname = re.sub(r"\.(ipynb|md)$", "", file)
            chapters.append({"docname": docname, "title": _title(path), "path": path, "label": _label(docname)})
        if chapters:
            parts.append({"caption": caption, "chapters": chapters})
    return parts


def render_svg(parts: List[Dict], href) -> str:
    """The inline SVG. ``href(docname)`` gives the link of a chapter (or None)."""
    items: List[str] = []
    circles: List[Tuple[float, float]] = []
    y = 8.0
    for p_index, part in enumerate(parts):
        style = f"cm-part{p_index % N_PART_STYLES}"
        y += PART_HEAD
        items.append(
            f'<text class="cm-caption {style}" x="{BOX_X}" y="{y - 9:.0f}">{html.escape(part["caption"].upper())}</text>'
        )
        for chapter in part["chapters"]:
            lines = textwrap.wrap(chapter["title"], CHARS_PER_LINE) or [chapter["docname"]]
            height = 14 + LINE_H * len(lines)
            text = "".join(
                f'<tspan x="{BOX_X + 14}" y="{y + 7 + LINE_H * (i + 1) - 4:.0f}">{html.escape(line)}</tspan>'
                for i, line in enumerate(lines)
            )
            cy = y + height / 2
            circles.append((cy, p_index))
            box = (
                f'<rect class="cm-box {style}" x="{BOX_X}" y="{y:.0f}" width="{BOX_W}" height="{height}" rx="8"/>'
                f'<text class="cm-title">{text}</text>'
            )
            link = href(chapter["docname"])
            if link:
                box = f'<a href="{html.escape(link)}"><title>{html.escape(chapter["title"])}</title>{box}</a>'
            items.append(box)
            items.append(
                f'<circle class="cm-dot {style}" cx="{PATH_X}" cy="{cy:.0f}" r="{13 if chapter["label"] else 6}"/>'
                + (f'<text class="cm-number" x="{PATH_X}" y="{cy + 4:.0f}" text-anchor="middle">{chapter["label"]}</text>'
                   if chapter["label"] else "")
            )
            y += height + GAP
    total_h = y + 4
    path = ""
    if circles:
        path = f'<line class="cm-path" x1="{PATH_X}" y1="{circles[0][0]:.0f}" x2="{PATH_X}" y2="{circles[-1][0]:.0f}"/>'
    return (
        f'<svg class="chapter-map-svg" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {total_h:.0f}" '
        f'width="{WIDTH}" height="{total_h:.0f}" font-size="{FONT}" aria-labelledby="chapter-map-title">'
        f'<title id="chapter-map-title">Map of the chapters: the learning path, part by part</title>'
        f"{path}{''.join(items)}</svg>"
    )


class ChapterMap(SphinxDirective):
    has_content = False
    option_spec = {"exclude": directives.unchanged}

    def run(self) -> List[nodes.Node]:
        srcdir = Path(self.env.srcdir)
        exclude = tuple(s.strip() for s in self.options.get("exclude", "").split(",") if s.strip())
        parts = read_parts(srcdir, exclude)
        self.env.note_dependency(str(srcdir / "_toc.yml"))
        for part in parts:
            for chapter in part["chapters"]:
                self.env.note_dependency(str(chapter["path"]))

        builder = self.env.app.builder
        here = self.env.docname

        def href(docname: str) -> Optional[str]:
            if not hasattr(builder, "get_target_uri"):
                return None
            try:
                return relative_uri(builder.get_target_uri(here), builder.get_target_uri(docname))
            except Exception:  # a builder without page URIs (e.g. LaTeX): no links
                return None

        svg = render_svg(parts, href)
        return [nodes.raw("", f'<figure class="chapter-map">{svg}</figure>', format="html")]


API_MARKER = "% resnet-edu:api"
# modules in reading order; any other module follows in alphabetical order
API_ORDER = ("models", "analysis", "data", "training", "visualization", "book")


def api_modules() -> List[str]:
    """Public modules of ``resnet_edu`` (``resnet_edu.X`` for every ``X`` not starting with ``_``).

    A subpackage (``resnet_edu.quantization``) is followed by the modules that define the names of
    its ``__all__``, in the order it first uses them (its reading order). Only those: a submodule the
    package does not re-export from may need an optional dependency, which autodoc would import.
    """
    import pkgutil

    import resnet_edu

    names = [m.name for m in pkgutil.iter_modules(resnet_edu.__path__) if not m.name.startswith("_")]
    ordered = [n for n in API_ORDER if n in names] + sorted(n for n in names if n not in API_ORDER)
    out: List[str] = []
    for n in ordered:
        out.append(f"resnet_edu.{n}")
        out += _submodules(f"resnet_edu.{n}")
    return out


def _submodules(package: str) -> List[str]:
    """The public modules ``package``'s ``__all__`` comes from (empty for a plain module), in order."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    if not hasattr(pkg, "__path__"):
        return []
    subs = [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    used: List[str] = []
    for name in getattr(pkg, "__all__", ()):
        mod = getattr(getattr(pkg, name, None), "__module__", None)
        if mod in subs and mod not in used:
            used.append(mod)
    return used


def _defining_module(name: str, modules: List[str]) -> str:
    import importlib

    import resnet_edu

    obj = getattr(resnet_edu, name)
    mod = getattr(obj, "__module__", None)
    if isinstance(mod, str) and mod in modules and getattr(importlib.import_module(mod), name, None) is obj:
        return mod
    for mod in modules:  # plain objects (a dict such as VARIANTS) have no __module__
        if getattr(importlib.import_module(mod), name, None) is obj:
            return mod
    return "resnet_edu"


def api_markdown() -> str:
    """The generated part of the API page (MyST markdown with ``eval-rst`` blocks for autodoc)."""
    import importlib

    import resnet_edu

    modules = api_modules()
    # relative to the current module, resnet_edu (set by the page's automodule)
    rows = "\n".join(f"   ~{_defining_module(n, modules)[len('resnet_edu.'):]}.{n}" for n in resnet_edu.__all__)
    out = [
        "The names below are importable from `resnet_edu` directly (`resnet_edu.resnet50()`,",
        "`resnet_edu.conv3x3`, …); each is documented in the module that defines it.",
        "",
        "```{eval-rst}",
        ".. currentmodule:: resnet_edu",
        "",
        ".. autosummary::",
        "   :nosignatures:",
        "",
        rows,
        "```",
        "",
    ]
    for mod in modules:
        # a subpackage's own page section shows its docstring only: its names are documented once,
        # in the modules that define them (the sections that follow, one heading level down)
        members = "   :no-members:" if hasattr(importlib.import_module(mod), "__path__") else "   :members:"
        heading = "##" if mod.count(".") == 1 else "###"
        out += [f"{heading} `{mod}`", "", "```{eval-rst}", f".. automodule:: {mod}", members, "```", ""]
    return "\n".join(out)


def _on_source_read(app: Sphinx, docname: str, source: List[str]) -> None:
    if API_MARKER not in source[0]:
        return
    import resnet_edu

    pkg = Path(resnet_edu.__file__).parent
    for path in sorted(pkg.rglob("*.py")):  # subpackages too (resnet_edu/quantization/)
        app.env.note_dependency(str(path))  # re-read the page when a module changes
    # ... and when a module is added or removed (see _api_outdated)
    app.env.resnet_edu_api = {"docname": docname, "modules": api_modules()}
    source[0] = source[0].replace(API_MARKER, api_markdown())


def _api_outdated(app: Sphinx, env, added, changed, removed) -> List[str]:
    seen = getattr(env, "resnet_edu_api", None)
    if seen and seen["modules"] != api_modules() and seen["docname"] in env.found_docs:
        return [seen["docname"]]
    return []


def _dedupe_inline_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated inline ``<script>`` bodies from a page.

    Sphinx 7.4 adds an inline script registered after ``Builder.init()`` twice (once with filename
    ``None``, once with ``''``); sphinx-thebe's ``const THEBE_JS_URL = ...`` then throws
    "Identifier 'THEBE_JS_URL' has already been declared" on every page.
    """
    files = context.get("script_files")
    if not isinstance(files, list):
        return
    seen = set()
    kept = []
    for js in files:
        filename = getattr(js, "filename", js) or ""
        attributes = getattr(js, "attributes", {}) or {}
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    files[:] = kept


def _register_authoryear_style() -> None:
    import pybtex.plugin
    from pybtex.richtext import Text
    from pybtex.style.formatting.plain import Style as PlainStyle
    from pybtex.style.labels import BaseLabelStyle

    def last_name(person) -> str:
        return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")

    class AuthorYearLabels(BaseLabelStyle):
        """``Surname, 2016``, ``A and B, 2016``, ``A et al., 2016``; ``a``/``b`` added when two collide."""

        def format_labels(self, sorted_entries):
            labels = []
            for entry in sorted_entries:
                people = entry.persons.get("author") or entry.persons.get("editor") or []
                names = [last_name(p) for p in people]
                if not names:
                    who = entry.key
                elif len(names) == 1:
                    who = names[0]
                elif len(names) == 2:
                    who = f"{names[0]} and {names[1]}"
                else:
                    who = f"{names[0]} et al."
                labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
            counts = {label: labels.count(label) for label in labels}
            seen: Dict[str, int] = {}
            for label in labels:
                if counts[label] > 1:
                    seen[label] = seen.get(label, 0) + 1
                    yield f"{label}{'abcdefghijklmnopqrstuvwxyz'[seen[label] - 1]}"
                else:
                    yield label

    class AuthorYearStyle(PlainStyle):
        default_label_style = "resnet-edu-authoryear"

    pybtex.plugin.register_plugin("pybtex.style.labels", "resnet-edu-authoryear", AuthorYearLabels)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


# The class list a formula explorer's HTML starts with (resnet_edu.explorers.VegaChart): prose that
# names the class is escaped in the page and cannot match.
VEGA_MARKER = 'class="resnet-edu-explorer resnet-edu-vega"'
VEGA_PRIORITY = 200


def _vega_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Load the vendored Vega and Vega-Lite on the pages that hold a formula explorer, before require.js."""
    if VEGA_MARKER not in (context.get("body") or ""):
        return
    from resnet_edu.explorers import VEGA_SCRIPTS

    for path in VEGA_SCRIPTS:
        app.add_js_file(path, priority=VEGA_PRIORITY)


KERNEL_CONFIG = '''# Written by book/_ext/book_extras.py for the kernels of the book build.
import logging


class _KnownNoise(logging.Filter):
    DROP = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")

    def filter(self, record):
        return not str(record.msg).startswith(self.DROP)


logging.getLogger("IPKernelApp").addFilter(_KnownNoise())
'''


def _kernel_environment(app: Sphinx) -> None:
    os.environ["RESNET_EDU_BOOK_BUILD"] = "1"
    profile = Path(app.outdir).parent / ".ipython" / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    config = profile / "ipython_kernel_config.py"
    if not config.is_file() or config.read_text(encoding="utf-8") != KERNEL_CONFIG:
        config.write_text(KERNEL_CONFIG, encoding="utf-8")
    os.environ["IPYTHONDIR"] = str(profile.parent)


def setup(app: Sphinx) -> Dict[str, object]:
    _kernel_environment(app)
    _register_authoryear_style()
    app.add_directive("chapter-map", ChapterMap)
    app.connect("html-page-context", _vega_scripts)
    app.connect("html-page-context", _dedupe_inline_scripts, priority=900)
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _api_outdated)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
