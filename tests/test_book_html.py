"""Checks on the built HTML book, without a browser (they run wherever the book builds).

Every page of ``_toc.yml`` is checked; chapters added later are picked up without editing this file.
The book comes from the session fixture ``built_book`` (``jupyter-book build . -W --keep-going``).
"""
from __future__ import annotations

import ast
import html as htmllib
import json
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

import resnet_edu as rn
from resnet_edu.book import repository

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "_build" / "jupyter_execute"


# --------------------------------------------------------------------------- helpers
def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


def toc_entries() -> List[Tuple[str, Optional[str]]]:
    """``[(docname, part caption)]`` for the root and every ``file:`` of ``_toc.yml``, in order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    out = [(toc["root"], None)]

    def walk(entries, caption):
        for entry in entries or []:
            if "file" in entry:
                out.append((re.sub(r"\.(ipynb|md)$", "", entry["file"]), caption))
            walk(entry.get("sections"), caption)

    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"), part.get("caption"))
    walk(toc.get("chapters"), None)
    return out


PAGES = [d for d, _ in toc_entries()]


def source_of(docname: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{docname}{suffix}").is_file():
            return ROOT / f"{docname}{suffix}"
    raise FileNotFoundError(docname)


NOTEBOOK_PAGES = [d for d in PAGES if source_of(d).suffix == ".ipynb"]


class Tags(HTMLParser):
    """Every start tag as ``(tag, attrs)``, the text of ``<style>`` blocks, and all ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, str]]] = []
        self.styles: List[str] = []
        self.ids: set = set()
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        self._in_style = tag == "style"

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


_parsed: Dict[Path, Tags] = {}


def parse(path: Path) -> Tags:
    if path not in _parsed:
        p = Tags()
        p.feed(path.read_text(encoding="utf-8"))
        _parsed[path] = p
    return _parsed[path]


def all_html(built: Path) -> List[Path]:
    return sorted(p for p in built.rglob("*.html") if p.relative_to(built).parts[0] not in ("_static", "_sources", "_images"))


def is_external(url: str) -> bool:
    return bool(re.match(r"^(https?:)?//", url.strip(), re.I))


# Attributes through which a page loads something at view time.
RESOURCE_ATTRS = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
    "track": ("src",),
}
# <link rel=...> values that are navigation, not a resource the browser fetches
NAV_RELS = {"index", "search", "next", "prev", "canonical", "alternate", "author", "license", "help", "top", "up", "first", "last"}


def resources(page: Path) -> List[str]:
    out = []
    parsed = parse(page)
    for tag, attrs in parsed.tags:
        for attr in RESOURCE_ATTRS.get(tag, ()):
            if not attrs.get(attr):
                continue
            if tag == "link" and set(attrs.get("rel", "").lower().split()) <= NAV_RELS:
                continue
            values = [v.strip().split(" ")[0] for v in attrs[attr].split(",")] if attr == "srcset" else [attrs[attr]]
            out += values
        if "style" in attrs:
            out += re.findall(r"url\(\s*['\"]?([^'\")]+)", attrs["style"])
    for css in parsed.styles:
        out += re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
        out += re.findall(r"@import\s+['\"]([^'\"]+)", css)
    return out


def local_target(built: Path, page: Path, url: str) -> Optional[Path]:
    """The file a relative URL of ``page`` points to (None for data:, mailto:, javascript:, #...)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or url.startswith("#") or not parts.path:
        return None
    target = (page.parent / urllib.parse.unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target


def page_text(path: Path) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", text))


# --------------------------------------------------------------------------- build hygiene
def test_every_toc_page_is_built(built_book):
    missing = [d for d in PAGES if not (built_book / f"{d}.html").is_file()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"


def _build_logs() -> str:
    """This session's build log, and the log of the last build that executed notebooks (``build-executed.log``):
    a rebuild from the cache re-reads no page and starts no kernel, so its own log could show nothing."""
    logs = [ROOT / "_build" / "build.log", ROOT / "_build" / "build-executed.log"]
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", p.read_text(encoding="utf-8")) for p in logs if p.is_file())


def test_book_build_log_has_no_warnings(built_book):
    log = _build_logs()
    assert "reading sources... [" in log, "no recorded build read a page: nothing to check"
    # Sphinx's own format ("file:line: WARNING: ..." or "WARNING: ..."); a kernel's log lines such as
    # "[IPKernelApp] WARNING | Kernel is running over TCP ..." are not build warnings
    warnings = [line for line in log.splitlines() if re.search(r"(^|: )(WARNING|ERROR|CRITICAL): ", line)]
    assert not warnings, "the build printed warnings:\n" + "\n".join(warnings[:20])


# Lines every kernel of a build used to print that no reader can act on (issue 13); the kernels'
# logging filter is set up by book/_ext/book_extras.py. (pip's "is ignored" warnings never reach the build
# log: the Makefile filters them from pip's own output.)
NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")


def test_book_build_log_is_quiet(built_book):
    log = _build_logs()
    if "Executing notebook" not in log:
        pytest.skip("no build recorded here executed a notebook (all came from the cache), so no kernel could print")
    noisy = [line for line in log.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "the build printed known noise:\n" + "\n".join(noisy[:10])
    config = ROOT / "_build" / ".ipython" / "profile_default" / "ipython_kernel_config.py"
    assert config.is_file() and all(n in config.read_text(encoding="utf-8") for n in NOISE[:2])


def test_title_author_copyright_logo_favicon(built_book):
    cfg = _config()
    page = built_book / "book" / "intro.html"
    text = page_text(page)
    assert cfg["title"] in text
    assert f"By {cfg['author']}" in " ".join(text.split())
    assert re.search(rf"Copyright\s+{re.escape(str(cfg['copyright']))}", text), "copyright year missing from the footer"
    for p in [page, built_book / f"{NOTEBOOK_PAGES[0]}.html"]:
        tags = parse(p).tags
        icons = [a["href"] for t, a in tags if t == "link" and "icon" in a.get("rel", "").split()]
        assert icons and all(local_target(built_book, p, h).is_file() for h in icons), f"{p.name}: no local favicon"
        assert local_target(built_book, p, icons[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        logos = [a["src"] for t, a in tags if t == "img" and "logo" in a.get("class", "")]
        assert logos and all(local_target(built_book, p, s).is_file() for s in logos), f"{p.name}: no logo"
    assert (ROOT / cfg["logo"]).is_file() and (ROOT / cfg["html"]["favicon"]).is_file()


# --------------------------------------------------------------------------- offline
def test_no_page_loads_anything_from_the_internet(built_book):
    """No script, stylesheet, font, image or frame URL outside the book, on any page."""
    bad = {}
    for page in all_html(built_book):
        ext = [u for u in resources(page) if is_external(u)]
        if ext:
            bad[str(page.relative_to(built_book))] = ext[:5]
    css_bad = {}
    for css in (built_book / "_static").rglob("*.css"):
        text = re.sub(r"/\*.*?\*/", "", css.read_text(encoding="utf-8", errors="replace"), flags=re.S)
        ext = [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]([^'\"]+)", text) if is_external(u)]
        if ext:
            css_bad[str(css.relative_to(built_book))] = ext[:5]
    assert not bad and not css_bad, f"external resources: pages {bad}; stylesheets {css_bad}"


def test_every_local_resource_and_link_exists(built_book):
    """Images, scripts, stylesheets and links of every page point at files (and anchors) that exist."""
    problems = []
    for page in all_html(built_book):
        for url in resources(page):
            target = local_target(built_book, page, url)
            if target is not None and not target.is_file():
                problems.append(f"{page.relative_to(built_book)}: missing resource {url}")
        for tag, attrs in parse(page).tags:
            if tag != "a" or "href" not in attrs:
                continue
            href = attrs["href"]
            target = local_target(built_book, page, href) if not href.startswith("#") else page
            if target is None:
                continue
            if not target.is_file():
                problems.append(f"{page.relative_to(built_book)}: broken link {href}")
                continue
            frag = urllib.parse.unquote(urllib.parse.urlsplit(href).fragment)
            if frag and target.suffix == ".html" and frag not in parse(target).ids:
                problems.append(f"{page.relative_to(built_book)}: link {href} has no anchor {frag!r}")
    assert not problems, "\n".join(problems[:30])


def test_vendored_javascript_is_used_and_licensed(built_book):
    cfg = _config()["sphinx"]["config"]
    from resnet_edu.explorers import VEGA_SCRIPTS

    vendored = [cfg["mathjax_path"], *cfg["nb_ipywidgets_js"], *VEGA_SCRIPTS]
    for rel in vendored:
        assert not is_external(rel), f"{rel} must be a file of the book"
        assert (ROOT / "book" / "_static" / rel).is_file(), f"vendored file missing: book/_static/{rel}"
        assert (built_book / "_static" / rel).is_file()
    readme = (ROOT / "book" / "_static" / "thirdparty" / "README.md").read_text(encoding="utf-8")
    for folder in (ROOT / "book" / "_static" / "thirdparty").iterdir():
        if folder.is_dir():
            assert folder.name in readme, f"thirdparty/README.md does not describe {folder.name}/"
            assert any(f.name.upper().startswith(("LICENSE", "THIRD-PARTY")) for f in folder.iterdir()), f"no licence in {folder}"


# --------------------------------------------------------------------------- notebooks: Colab, widgets, outputs
@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_notebook_page_has_a_colab_launch_button(built_book, docname):
    repo = repository(ROOT)
    owner_name = re.match(r"https://github\.com/(.+)$", repo["url"]).group(1)
    want = f"https://colab.research.google.com/github/{owner_name}/blob/{repo['branch']}/{docname}.ipynb"
    links = [a.get("href") for t, a in parse(built_book / f"{docname}.html").tags if t == "a"]
    assert want in links, f"{docname}: no Colab launch link {want}"
    # the notebook's own badge (an external image) is removed from the HTML page
    assert "colab-badge.svg" not in (built_book / f"{docname}.html").read_text(encoding="utf-8")


def explorer_names(docname: str) -> List[str]:
    """The explorers a chapter's notebook shows: the X of its code lines that call ``explore.X(...)``."""
    path = source_of(docname)
    if path.suffix != ".ipynb":
        return []
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return re.findall(r"^\s*explore\.(\w+)\(", code, re.M)


def explorer_calls(docname: str, formula: bool = False) -> int:
    """How many widget explorers (or, with ``formula``, Vega-Lite formula explorers) a chapter shows."""
    from resnet_edu.explorers import FORMULA_EXPLORERS

    return sum((n in FORMULA_EXPLORERS) == formula for n in explorer_names(docname))


# Chapters whose notebooks still show an old ipywidgets.interactive panel (dead in the static book).
# Empty once every chapter uses resnet_edu.explorers.
LIVE_PANELS_ALLOWED: set = set()


def test_widgets_have_state_local_manager_and_static_explorers(built_book):
    """Every page with a widget saves its state and loads the vendored manager; every ``explore.X()``
    call of a notebook (the formula explorers apart: Vega-Lite charts, checked below) is a precomputed
    (static) explorer in its page; no "static copy" duplicates."""
    problems, seen, explorers = [], 0, 0
    for docname in PAGES:
        page = built_book / f"{docname}.html"
        text = page.read_text(encoding="utf-8")
        want = explorer_calls(docname) if docname in NOTEBOOK_PAGES else 0
        if "panel-static-caption" in text and docname not in LIVE_PANELS_ALLOWED:
            problems.append(f"{docname}: a duplicated 'static copy' of a panel")
        if 'type="application/vnd.jupyter.widget-view+json"' not in text:
            if want:
                problems.append(f"{docname}: {want} explorer calls but no widget on the page")
            continue
        seen += 1
        if 'type="application/vnd.jupyter.widget-state+json"' not in text:
            problems.append(f"{docname}: widget views without saved widget state")
        srcs = [a.get("src", "").split("?")[0] for t, a in parse(page).tags if t == "script"]
        if not any(s.endswith("_static/thirdparty/jupyter-widgets/embed-amd.js") for s in srcs):
            problems.append(f"{docname}: does not load the vendored widget manager")
        m = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', text, re.S)
        state = json.loads(m.group(1))["state"] if m else {}
        views = [json.loads(v)["model_id"] for v in
                 re.findall(r'type="application/vnd.jupyter.widget-view\+json">(.*?)</script>', text, re.S)]
        shown = [state.get(v, {}) for v in views]
        static = [mdl for mdl in shown if "resnet-edu-explorer" in mdl.get("state", {}).get("_dom_classes", [])
                  and mdl.get("model_name") == "VBoxModel"]
        live = [mdl for mdl in shown if "widget-interact" in mdl.get("state", {}).get("_dom_classes", [])]
        explorers += len(static)
        if len(static) != want:
            problems.append(f"{docname}: {len(static)} static explorers in the page, {want} explore.X() calls in the notebook")
        if live and docname not in LIVE_PANELS_ALLOWED:
            problems.append(f"{docname}: {len(live)} ipywidgets.interactive panels, which need a kernel (use resnet_edu.explorers)")
        links = sum(1 for mdl in state.values() if mdl.get("model_name") == "LinkModel")
        if static and links < len(static):
            problems.append(f"{docname}: explorers without jslink-ed controls")
    if not seen:
        pytest.skip("no page of the book has a widget")
    assert explorers >= 9, f"only {explorers} static explorers in the whole book"
    assert not problems, "\n".join(problems)


def test_formula_explorers_load_vega_before_require_js(built_book):
    """Each formula explorer is a Vega-Lite chart in its page; the vendored Vega and Vega-Lite are
    loaded on those pages only, and before require.js (else they register as anonymous AMD modules)."""
    from resnet_edu.explorers import VEGA_SCRIPTS

    problems, charts = [], 0
    for docname in PAGES:
        page = built_book / f"{docname}.html"
        text = page.read_text(encoding="utf-8")
        want = explorer_calls(docname, formula=True) if docname in NOTEBOOK_PAGES else 0
        found = text.count('<div class="resnet-edu-explorer resnet-edu-vega"')
        charts += found
        srcs = [a.get("src", "").split("?")[0] for t, a in parse(page).tags if t == "script" and a.get("src")]
        vega = [i for i, s in enumerate(srcs) if any(s.endswith(f"_static/{v}") for v in VEGA_SCRIPTS)]
        if found != want:
            problems.append(f"{docname}: {found} Vega-Lite explorers in the page, {want} formula explorer calls")
        if not want:
            if vega:
                problems.append(f"{docname}: loads Vega without a formula explorer")
            continue
        if len(vega) != len(VEGA_SCRIPTS):
            problems.append(f"{docname}: loads {len(vega)} of the vendored Vega scripts")
        require = [i for i, s in enumerate(srcs) if s.endswith("require.js")]
        if require and vega and max(vega) > min(require):
            problems.append(f"{docname}: Vega is loaded after require.js")
    assert charts == 3, f"{charts} formula explorers in the book"
    # no page here has both (the formula pages have no widgets), so the order is checked where it is set:
    # myst-nb adds each nb_ipywidgets_js script with its configured kwargs, Sphinx's default priority 500
    widget_js = _config()["sphinx"]["config"]["nb_ipywidgets_js"]
    assert "thirdparty/requirejs/require.js" in widget_js
    extras = (ROOT / "book" / "_ext" / "book_extras.py").read_text(encoding="utf-8")
    vega_priority = int(re.search(r"^VEGA_PRIORITY = (\d+)$", extras, re.M).group(1))
    assert all(vega_priority < (kw or {}).get("priority", 500) for kw in widget_js.values()), (vega_priority, widget_js)
    assert not problems, "\n".join(problems)


STDERR_BOX = re.compile(r'class="output stderr[ "]')
"""A stderr output as myst-nb renders it: ``class="output stderr highlight-myst-ansi notranslate"`` (other classes may follow)."""


def stderr_cells(text: str) -> list:
    """The cells of a page that show a stderr box, leaving out those tagged ``show-stderr`` (shown on purpose)."""
    cells = re.split(r'(?=<div class="cell[ "])', text)
    return [c for c in cells if STDERR_BOX.search(c) and "tag_show-stderr" not in c.split(">", 1)[0]]


def test_stderr_box_check_finds_the_boxes_myst_nb_renders():
    """The check must catch the markup the build really writes (an exact class="output stderr" never matched it)."""
    box = ('<div class="cell docutils container">\n<div class="cell_output docutils container">\n'
           '<div class="output stderr highlight-myst-ansi notranslate"><div class="highlight"><pre><span></span>'
           'USDT:2026-12-06 00:04:18 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n</pre></div></div></div></div>')
    assert len(stderr_cells(box)) == 1 and "profiler_start" in page_text_from(box)
    assert stderr_cells(box.replace('class="cell docutils', 'class="cell tag_show-stderr docutils')) == []
    assert stderr_cells(box.replace("output stderr", "output stream")) == []


@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_no_stderr_boxes(built_book, docname):
    """Warnings printed to stderr show as red boxes; a cell may show one on purpose with the tag show-stderr."""
    noisy = stderr_cells((built_book / f"{docname}.html").read_text(encoding="utf-8"))
    samples = [page_text_from(c)[:200] for c in noisy]
    assert not noisy, f"{docname}: {len(noisy)} cell(s) print to stderr: {samples}"


def page_text_from(fragment: str) -> str:
    m = re.search(r'class="output stderr[^"]*"(.*?)</pre>', fragment, re.S)
    return htmllib.unescape(re.sub(r"<[^>]+>", "", m.group(1))) if m else ""


def _glue_last_line(source: str) -> str:
    """The last line of a code cell's ``source`` when it is a ``glue(...)`` call, else ``""``."""
    lines = source.rstrip().splitlines()
    last = lines[-1].strip() if lines else ""
    return last if last.startswith("glue(") else ""


def _cells_ending_in_glue(html_text: str) -> list:
    """``(last line, output classes)`` of each rendered code cell whose source ends in a ``glue(...)`` call."""
    found = []
    for cell in re.split(r'(?=<div class="cell[ "])', html_text)[1:]:
        m = re.search(r'<div class="cell_input[^"]*">.*?<pre>(.*?)</pre>', cell, re.S)
        last = _glue_last_line(htmllib.unescape(re.sub(r"<[^>]+>", "", m.group(1)))) if m else ""
        if last:
            found.append((last, re.findall(r'class="output ([a-z_]+)', cell)))
    return found


def test_glue_echo_check_sees_an_echo():
    """The check reads the rendered page (the executed notebooks the build writes out hold no outputs when
    they come from the cache); a value echoed under a glue cell renders as an ``output text_plain`` box."""
    cell = ('<div class="cell docutils container">\n<div class="cell_input docutils container">\n<div class="highlight-ipython3 notranslate">'
            '<div class="highlight"><pre><span></span><span class="n">x</span> <span class="o">=</span> <span class="mi">1</span>\n'
            '<span class="n">glue</span><span class="p">(</span><span class="s2">&quot;a&quot;</span><span class="p">,</span> '
            '<span class="n">x</span><span class="p">)</span>\n</pre></div>\n</div>\n</div>\n')
    echo = cell + '<div class="cell_output docutils container">\n<div class="output text_plain highlight-myst-ansi notranslate"><pre>1</pre></div></div></div>'
    assert _cells_ending_in_glue(cell) == [('glue("a", x)', [])]
    assert _cells_ending_in_glue(echo) == [('glue("a", x)', ["text_plain"])]
    from resnet_edu.book import glue

    assert glue("resnet_edu_test_value", 1) is None  # so a glue(...) on a cell's last line has nothing to echo


@pytest.mark.parametrize("docname", [d for d in NOTEBOOK_PAGES if not d.startswith("notebooks/exercises/")])  # exercises: not executed
def test_glue_calls_do_not_echo_their_value(built_book, docname):
    """A cell ending in ``glue(...)`` must not print the glued value under it (a stray number)."""
    found = _cells_ending_in_glue((built_book / f"{docname}.html").read_text(encoding="utf-8"))
    nb = json.loads(source_of(docname).read_text(encoding="utf-8"))
    in_source = [c for c in nb["cells"] if c["cell_type"] == "code" and _glue_last_line("".join(c["source"]))]
    assert len(found) == len(in_source), f"{docname}: {len(in_source)} cells end in glue(...) in the notebook, {len(found)} found on the page"
    echoing = [last[:80] for last, outputs in found if "text_plain" in outputs]   # a value echoed renders as text_plain
    assert not echoing, f"{docname}: cells echo a glued value under them: {echoing}"


def test_math_uses_the_vendored_mathjax(built_book):
    problems, seen = [], 0
    for docname in PAGES:
        page = built_book / f"{docname}.html"
        if 'class="math' not in page.read_text(encoding="utf-8"):
            continue
        seen += 1
        srcs = [a.get("src", "") for t, a in parse(page).tags if t == "script"]
        if not any("_static/thirdparty/mathjax/tex-chtml-full.js" in s for s in srcs):
            problems.append(docname)
    if not seen:
        pytest.skip("no page of the book has math")
    assert not problems, f"pages with math that do not load the vendored MathJax: {problems}"


# --------------------------------------------------------------------------- glued numbers
GLUE_ROLE = re.compile(r"\{glue:text\}`([^`]+)`")


def _glue_values(docname: str) -> Dict[str, str]:
    path = EXECUTED / f"{docname}.glue.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: v["data"]["text/plain"] for k, v in data.items() if "text/plain" in v.get("data", {})}


def _format(text: str, fmt: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if not fmt:
        return str(value)
    kind = fmt[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, fmt)


def _plain_quotes(text: str) -> str:
    return text.translate(str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'}))


def _markdown_of(docname: str) -> str:
    src = source_of(docname)
    if src.suffix == ".md":
        return src.read_text(encoding="utf-8")
    nb = json.loads(src.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in nb["cells"] if c["cell_type"] == "markdown")


GLUE_PAGES = [d for d in PAGES if GLUE_ROLE.search(_markdown_of(d))]


@pytest.mark.parametrize("docname", GLUE_PAGES)
def test_glued_numbers_appear_in_the_page(built_book, docname):
    roles = GLUE_ROLE.findall(_markdown_of(docname))
    pasted = [htmllib.unescape(s) for s in re.findall(r'<span class="pasted-text">(.*?)</span>', (built_book / f"{docname}.html").read_text(encoding="utf-8"), re.S)]
    for role in roles:
        key, _, fmt = role.rpartition(":") if ":" in role.split("::")[-1] else (role, "", "")
        doc = docname
        if "::" in key:
            other, key = key.split("::", 1)
            doc = str((Path(docname).parent / other).as_posix())
            doc = re.sub(r"\.(ipynb|md)$", "", re.sub(r"[^/]+/\.\./", "", doc))
        values = _glue_values(doc)
        assert key in values, f"{docname}: glue key {key!r} was not recorded by {doc}"
        expected = _plain_quotes(_format(values[key], fmt))
        shown = [_plain_quotes(p) for p in pasted]  # Sphinx's smart quotes turn 'x' into ‘x’
        assert expected in shown, f"{docname}: {role!r} should show {expected!r}; the page shows {pasted}"


def test_first_chapter_shows_resnet18_parameter_count(built_book):
    first = next(d for d in NOTEBOOK_PAGES if Path(d).name.startswith("00_"))
    expected = f"{rn.count_parameters(rn.resnet18()):,}"
    assert expected in page_text(built_book / f"{first}.html")
    assert f'<span class="pasted-text">{expected}</span>' in (built_book / f"{first}.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the landing page and reference pages
def _plain(fragment: str) -> str:
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def test_landing_page_has_the_chapter_map(built_book):
    page = built_book / "book" / "intro.html"
    text = page.read_text(encoding="utf-8")
    assert "book/intro.html" in (built_book / "index.html").read_text(encoding="utf-8"), "index.html must lead to the intro"
    m = re.search(r'<figure class="chapter-map">(.*?)</figure>', text, re.S)
    assert m, "no chapter map on the landing page"
    boxes = re.findall(r'<a href="([^"]+)"><title>(.*?)</title>', m.group(1), re.S)
    chapters = [d for d, caption in toc_entries()[1:] if caption != "Reference"]
    targets = [str((page.parent / href).resolve().relative_to(built_book.resolve())) for href, _ in boxes]
    assert targets == [f"{d}.html" for d in chapters], "the map does not show the TOC's chapters in order"
    for (href, title), d in zip(boxes, chapters):  # each box carries the chapter's own title
        h1 = re.search(r"<h1>((?:(?!</h1>).)*?)<a class=\"headerlink\"", (built_book / f"{d}.html").read_text(encoding="utf-8"), re.S)
        assert h1 and _plain(h1.group(1)) == _plain(title), f"{d}: map says {_plain(title)!r}"


def test_intro_counts_the_variants_it_names():
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    words = {10: "ten"}
    assert words[len(rn.VARIANTS)] in text and "ten variants" in text


ISSUE_TERMS = ["残差", "瓶颈", "量化", "零点", "缩放因子", "校准", "融合", "下采样", "步长", "膨胀卷积", "批归一化"]


def test_glossary_pairs_english_and_chinese(built_book):
    page = built_book / "book" / "glossary.html"
    text = page.read_text(encoding="utf-8")
    terms = [htmllib.unescape(re.sub(r"<[^>]+>", "", t)).strip()
             for t in re.findall(r'<dt id="term-[^"]*">(.*?)<a class="headerlink"', text, re.S)]
    assert len(terms) >= 60, f"only {len(terms)} glossary terms"
    for term in ISSUE_TERMS:
        assert term in terms, f"glossary lacks {term}"
    english = [t for t in terms if re.fullmatch(r"[\x00-\x7f]+", t)]
    chinese = [t for t in terms if re.search(r"[\u4e00-\u9fff]", t)]
    assert len(english) >= 30 and len(chinese) >= 30
    # terms are referenced from other pages with {term}
    intro = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r'href="glossary.html#term-[^"]+"', intro)


def test_api_reference_documents_every_public_name_and_module(built_book):
    import pkgutil

    text = (built_book / "book" / "api.html").read_text(encoding="utf-8")
    ids = parse(built_book / "book" / "api.html").ids
    modules = [m.name for m in pkgutil.iter_modules(rn.__path__) if not m.name.startswith("_")]
    for mod in modules:
        assert f"module-resnet_edu.{mod}" in ids, f"API page lacks module resnet_edu.{mod}"
    for name in rn.__all__:
        assert any(i.startswith("resnet_edu.") and i.endswith(f".{name}") for i in ids), f"API page lacks {name}"
    # docstrings really rendered: the summary table and some prose
    assert 'class="autosummary' in text
    assert len(re.findall(r'<dt class="sig sig-object py"', text)) >= len(rn.__all__)


def test_bibliography_lists_the_papers(built_book):
    text = page_text(built_book / "book" / "bibliography.html")
    for title in [
        "Deep Residual Learning for Image Recognition",
        "Aggregated Residual Transformations for Deep Neural Networks",
        "Wide Residual Networks",
        "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
        "Quantizing Deep Convolutional Networks for Efficient Inference",
        "Accurate, Large Minibatch SGD",
        "Batch Normalization",
    ]:
        assert title.lower() in " ".join(text.split()).lower(), f"bibliography lacks {title!r}"
    keys = re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(encoding="utf-8"), re.M)
    entries = re.findall(r'role="doc-biblioentry"', (built_book / "book" / "bibliography.html").read_text(encoding="utf-8"))
    assert len(entries) == len(keys), f"{len(keys)} entries in references.bib, {len(entries)} on the page"
    # citations from the other pages link to the bibliography
    intro = (built_book / "book" / "intro.html").read_text(encoding="utf-8")
    assert re.search(r'href="bibliography.html#id\d+"', intro)
