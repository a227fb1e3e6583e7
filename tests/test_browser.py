"""The built book in a real browser: every page loads in headless Chromium without errors.

The HTML in ``_build/html`` (from the session fixture ``built_book``) is served on 127.0.0.1 by a
Python ``http.server`` thread. Each page of the table of contents is opened at desktop width and
at 390 px (a phone) and screenshotted into ``_build/screenshots/``. A page fails when:

- the browser logs a JavaScript error (console error or uncaught exception);
- it requests anything outside 127.0.0.1 (the book must work offline; such requests are blocked
  and reported), or a request fails or answers 4xx/5xx (a missing script, font or image);
- an image does not load;
- a link to another page of the book, or to an anchor in one, leads nowhere;
- a widget that the embedded widget manager renders from the saved state shows nothing, or an
  explorer (``resnet_edu.explorers``) or ``ipywidgets.interactive`` panel renders without controls
  or with an empty output area; a formula explorer (a Vega-Lite chart) does not draw, or draws
  without its controls;
- at 390 px the page itself scrolls sideways, or content of the article sticks out of the window
  where no scrollable box lets the reader reach it (wide content must scroll inside its own box).

Every explorer is operated like a reader would (``test_explorers_respond_to_every_control``): each
dropdown is set to another option and each slider (an ipywidgets slider or a Vega range input)
moved with the keyboard, and what the explorer shows (text, images, SVG) must change, with no
request leaving the page; the number of explorers on each page must equal the ``explore.X()`` calls
of its notebook, and the number of Vega-Lite charts its formula-explorer calls, so none silently
stops working.

Chromium is Debian's ``chromium`` package, driven over the DevTools protocol by Playwright's Python
client with ``executable_path`` (no browser download). Without chromium or Playwright the tests
skip with a one-line reason; ``.ci/run`` installs chromium so CI always runs them.
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import urllib.parse
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags the machine notes ask for; a fresh --user-data-dir comes from launch_persistent_context.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"desktop": (1280, 900), "mobile": (390, 844)}
MAX_SHOT_HEIGHT = 20_000  # px; longer pages (the API reference) are cut there in the screenshot

if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium); browser tests skipped", allow_module_level=True)
try:
    import playwright.sync_api  # noqa: F401 - the driver itself is conftest's playwright_driver
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("the Python package 'playwright' is not installed; browser tests skipped", allow_module_level=True)


def toc_docnames() -> List[str]:
    """Every page of the book, in reading order: the root and each ``file:`` of ``_toc.yml``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(re.sub(r"\.(ipynb|md)$", "", entry["file"]))
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return names


PAGES = toc_docnames()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture(scope="session")
def site(built_book: Path):
    """Serve the built HTML on a free port of 127.0.0.1; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory, playwright_driver):
    """One headless Chromium for the session, with a fresh profile directory."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    context = playwright_driver.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS,
        service_workers="block",
    )
    yield context
    context.close()


# Collected in the page after load: images, same-origin links, widget views and their content.
_PROBE = """() => {
  const imgs = Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => new URL(a.getAttribute('href'), document.baseURI).href);
  const views = Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')).map(s => {
    const area = s.previousElementSibling;
    const rendered = !!area && area.classList.contains('widget-subarea');
    const box = rendered ? area.getBoundingClientRect() : {width: 0, height: 0};
    // a panel (resnet_edu.visualization.panel = ipywidgets.interactive): controls and an output area
    const panel = rendered && !!area.querySelector('.widget-interact, .resnet-edu-explorer');
    const outputs = rendered ? Array.from(area.querySelectorAll('.widget-output')) : [];
    const controls = rendered ? area.querySelectorAll('.widget-dropdown, .widget-slider, .widget-toggle-buttons, .widget-checkbox, .widget-text, .widget-button, .widget-select, .widget-radio-box, .widget-progress').length : 0;
    const outputContent = outputs.map(o => (o.innerText || '').trim().length + o.querySelectorAll('img, svg, table, canvas').length);
    const text = rendered ? (area.innerText || '').trim().length : 0;
    // hidden by its own layout on purpose (e.g. tqdm(leave=False) hides a finished progress bar)
    const hidden = rendered && !!area.firstElementChild && getComputedStyle(area.firstElementChild).visibility === 'hidden';
    return {rendered, panel, hidden, width: box.width, height: box.height, controls, text, outputs: outputContent};
  });
  // content of the article that sticks out of the window and cannot be scrolled to (no scrollable box around it)
  const article = document.querySelector('article.bd-article') || document.body;
  const cut = [];
  for (const el of article.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right <= window.innerWidth + 1) continue;
    const st = getComputedStyle(el);  // visually hidden copies (e.g. MathJax's assistive MathML) do not count
    if (st.visibility === 'hidden' || st.clip !== 'auto' || st.clipPath !== 'none' || st.opacity === '0') continue;
    let scrollable = false;
    for (let p = el.parentElement; p && p !== article.parentElement; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll') { scrollable = true; break; }
    }
    const parentCut = el.parentElement && cut.length && cut[cut.length - 1].el.contains(el);
    if (!scrollable && !parentCut) cut.push({el, what: el.tagName.toLowerCase() + (el.className && el.className.baseVal === undefined ? '.' + String(el.className).split(' ')[0] : '') + ' "' + (el.textContent || '').trim().slice(0, 50) + '"'});
  }
  // formula explorers (resnet_edu.explorers.formula_chart): a Vega-Lite chart drawn as SVG, with its controls
  const charts = Array.from(document.querySelectorAll('.resnet-edu-vega')).map(el => {
    const svg = el.querySelector('.rx-vega-chart svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    return {state: el.getAttribute('data-state'), controls: el.querySelectorAll('.rx-vega-controls input, .rx-vega-controls select').length,
            width: box.width, height: box.height, text: svg ? (svg.textContent || '').trim().length : 0};
  });
  return {imgs, links, views, charts, cut: cut.map(c => c.what),
          scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth};
}"""

_WIDGETS_DONE = """() => {
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  const charts = document.querySelectorAll('.resnet-edu-vega');
  return Array.from(views).every(s => s.previousElementSibling && s.previousElementSibling.classList.contains('widget-subarea')
                                      && s.previousElementSibling.childElementCount > 0)
    && Array.from(charts).every(c => ['rendered', 'error', 'no-vega'].includes(c.getAttribute('data-state')));
}"""


def _ids(path: Path, cache: Dict[Path, set]) -> set:
    if path not in cache:
        text = path.read_text(encoding="utf-8", errors="replace")
        cache[path] = set(re.findall(r'\bid="([^"]+)"', text)) | set(re.findall(r'\bname="([^"]+)"', text))
    return cache[path]


def visit(browser, site: str, html: Path, docname: str, viewport: str) -> Dict[str, list]:
    """Open one page at one viewport; return the problems found (empty lists when all is well)."""
    width, height = VIEWPORTS[viewport]
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": height})
    host = urllib.parse.urlsplit(site).netloc
    problems: Dict[str, list] = {"console": [], "external": [], "failed": [], "images": [], "links": [], "panels": [], "layout": []}

    def route(r):
        if urllib.parse.urlsplit(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            problems["external"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems["console"].append(f"{m.text} ({m.location.get('url', '')})"))
    page.on("pageerror", lambda e: problems["console"].append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: urllib.parse.urlsplit(r.url).netloc == host
            and problems["failed"].append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems["failed"].append(f"{r.url}: HTTP {r.status}"))
    try:
        page.goto(site + docname + ".html", wait_until="load")
        page.wait_for_function(_WIDGETS_DONE, timeout=30_000)
        page.evaluate("() => (window.MathJax && MathJax.startup && MathJax.startup.promise) || null")
        page.evaluate("() => document.fonts.ready.then(() => true)")
        page.wait_for_timeout(300)  # let layouts triggered by fonts and widgets settle
        probe = page.evaluate(_PROBE)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / f"{docname.replace('/', '__')}-{viewport}.png"
        height = page.evaluate("() => document.documentElement.scrollHeight")
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, MAX_SHOT_HEIGHT)}
        page.screenshot(path=str(shot), full_page=True, clip=clip)
    finally:
        page.close()

    problems["images"] = [i["src"][:120] for i in probe["imgs"] if not i["ok"]]
    id_cache: Dict[Path, set] = {}
    for href in sorted(set(probe["links"])):
        parts = urllib.parse.urlsplit(href)
        if parts.netloc != host:
            continue
        rel = urllib.parse.unquote(parts.path.lstrip("/"))
        target = html / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems["links"].append(f"{href}: no such file")
        elif parts.fragment and target.suffix == ".html" and urllib.parse.unquote(parts.fragment) not in _ids(target, id_cache):
            problems["links"].append(f"{href}: no element with id {parts.fragment!r}")
    for n, view in enumerate(probe["views"], 1):
        if not view["rendered"]:
            problems["panels"].append(f"widget {n}: not rendered by the widget manager")
        elif view["height"] < 10 or view["width"] < 10:
            problems["panels"].append(f"widget {n}: rendered with no size ({view['width']:.0f}x{view['height']:.0f} px)")
        elif view["panel"] and not (view["controls"] and view["outputs"] and all(view["outputs"])):
            problems["panels"].append(f"widget {n}: a panel's output area is empty")
        elif not view["panel"] and not view["hidden"] and not (view["controls"] or view["text"]):
            problems["panels"].append(f"widget {n}: shows nothing")  # e.g. a progress bar without bar or text
    for n, chart in enumerate(probe["charts"], 1):
        if chart["state"] != "rendered":
            problems["panels"].append(f"formula explorer {n}: not drawn (state {chart['state']!r})")
        elif not (chart["controls"] and chart["text"] and chart["width"] >= 10 and chart["height"] >= 10):
            problems["panels"].append(f"formula explorer {n}: drawn without controls or content ({chart})")
    if viewport == "mobile" and probe["scrollWidth"] > probe["innerWidth"] + 1:
        problems["layout"].append(f"the page is {probe['scrollWidth']} px wide in a {probe['innerWidth']} px window")
    problems["layout"] += [f"cut off at the right edge, cannot be scrolled: {c}" for c in probe["cut"]]
    return problems


@pytest.mark.parametrize("docname", PAGES)
def test_page_in_chromium(docname, built_book, site, browser):
    found = {}
    for viewport in VIEWPORTS:
        problems = visit(browser, site, built_book, docname, viewport)
        for kind, items in problems.items():
            for item in items:
                found.setdefault(f"{viewport}/{kind}", []).append(item)
    assert not found, f"{docname}: " + "; ".join(f"[{k}] " + " | ".join(v[:5]) for k, v in found.items())


def test_the_checks_catch_a_broken_page(built_book, site, browser):
    """The checks above can fail: a copy of a widget page, broken on purpose, is caught on every count."""
    import json

    for docname in PAGES:
        source = built_book / f"{docname}.html"
        text = source.read_text(encoding="utf-8")
        if "widget-state+json" in text and "widget-view+json" in text:
            break
    else:
        pytest.skip("no page of the book has a widget")
    m = re.search(r'(<script type="application/vnd.jupyter.widget-state\+json">)(.*?)(</script>)', text, re.S)
    state = json.loads(m.group(2))
    emptied = 0
    for model in state["state"].values():
        if model["model_name"] == "OutputModel":
            model["state"]["outputs"] = []
            emptied += 1
    assert emptied, "the widget page has no output widget to empty"
    broken = text[: m.start(2)] + json.dumps(state) + text[m.end(2):]
    broken = broken.replace(
        "</article>",
        '<img src="https://example.org/remote.png"><img src="no-such-image.png">'
        '<a href="no-such-page.html">x</a><script>console.error("deliberate error")</script></article>',
        1,
    )
    name = f"{Path(docname).parent.as_posix()}/_selftest_broken".lstrip("./")
    target = built_book / f"{name}.html"
    target.write_text(broken, encoding="utf-8")
    try:
        problems = visit(browser, site, built_book, name, "desktop")
    finally:
        target.unlink()
        for shot in SCREENSHOTS.glob("*_selftest_broken*"):
            shot.unlink()
    assert any("example.org" in u for u in problems["external"]), problems
    assert any("no-such-image.png" in u for u in problems["images"]), problems
    assert any("no-such-image.png" in u for u in problems["failed"]), problems
    assert any("deliberate error" in c for c in problems["console"]), problems
    assert any("no-such-page.html" in u for u in problems["links"]), problems
    assert any("output area is empty" in p for p in problems["panels"]), problems


def test_the_checks_catch_a_broken_chart(built_book, site, browser):
    """A formula explorer whose Vega-Lite spec is broken is reported (not drawn, JavaScript error)."""
    for docname in PAGES:
        text = (built_book / f"{docname}.html").read_text(encoding="utf-8")
        if 'class="rx-vega-spec">' in text:
            break
    else:
        pytest.skip("no page of the book has a formula explorer")
    broken = text.replace('class="rx-vega-spec">{', 'class="rx-vega-spec">{{', 1)   # not JSON any more
    assert broken != text
    name = f"{Path(docname).parent.as_posix()}/_selftest_chart".lstrip("./")
    target = built_book / f"{name}.html"
    target.write_text(broken, encoding="utf-8")
    try:
        problems = visit(browser, site, built_book, name, "desktop")
    finally:
        target.unlink()
        for shot in SCREENSHOTS.glob("*_selftest_chart*"):
            shot.unlink()
    assert any("formula explorer 1: not drawn (state 'error')" in p for p in problems["panels"]), problems
    assert problems["console"], problems


def test_root_redirects_to_the_landing_page(built_book, site, browser):
    page = browser.new_page()
    try:
        page.goto(site, wait_until="load")
        page.wait_for_url(re.compile(r".*/book/intro\.html$"), timeout=10_000)
        assert page.locator("figure.chapter-map svg a").count() >= 1
    finally:
        page.close()


def test_search_works_offline(built_book, site, browser):
    """The theme's search page finds the glossary's terms from the local search index."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(site + "search.html?q=bottleneck", wait_until="load")
        # results are shown one by one; the status line says when all are there
        page.wait_for_function("() => /Search finished|did not match/.test((document.querySelector('#search-results .search-summary, #search-results p') || {}).innerText || '')", timeout=30_000)
        hits = page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
    finally:
        page.close()
    assert not errors, errors
    assert any("glossary" in h for h in hits), hits


def _explorer_names(docname: str) -> List[str]:
    """The X of each ``explore.X(...)`` call in the code cells of a chapter's notebook ([] for other pages)."""
    import json

    path = ROOT / f"{docname}.ipynb"
    if not path.is_file():
        return []
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return re.findall(r"^\s*explore\.(\w+)\(", code, re.M)


def _explorer_calls(docname: str) -> int:
    """``explore.X(...)`` calls in the code cells of a chapter's notebook (0 for other pages)."""
    return len(_explorer_names(docname))


def _formula_calls(docname: str) -> int:
    """The calls of formula explorers (drawn by Vega-Lite in the book) among them."""
    from resnet_edu.explorers import FORMULA_EXPLORERS

    return sum(n in FORMULA_EXPLORERS for n in _explorer_names(docname))


EXPLORER_PAGES = [d for d in PAGES if _explorer_calls(d)]

# What an explorer shows: the text, pictures and SVG drawings of its (visible) output areas.
_SHOWN = """el => Array.from(el.querySelectorAll('.widget-output, .rx-vega-chart')).map(p =>
  (p.innerText || '') + Array.from(p.querySelectorAll('img')).map(i => i.src.length + ':' + i.src.slice(-60)).join(',')
  + Array.from(p.querySelectorAll('svg')).map(s => s.innerHTML.length + ':' + s.innerHTML.slice(-200)).join(',')).join('|')"""


@pytest.mark.parametrize("docname", EXPLORER_PAGES)
def test_explorers_respond_to_every_control(docname, built_book, site, browser):
    """Each control of each explorer changes what the reader sees, with no kernel and no request out."""
    page = browser.new_page()
    host = urllib.parse.urlsplit(site).netloc
    outside, errors, report = [], [], []

    def route(r):
        if urllib.parse.urlsplit(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(site + docname + ".html", wait_until="load")
        page.wait_for_function(_WIDGETS_DONE, timeout=30_000)
        explorers = page.locator(".resnet-edu-explorer")
        want = _explorer_calls(docname)
        assert explorers.count() == want, f"{docname}: {explorers.count()} explorers on the page, {want} in the notebook"
        charts = page.locator(".resnet-edu-vega").count()
        assert charts == _formula_calls(docname), f"{docname}: {charts} Vega-Lite explorers, {_formula_calls(docname)} formula explorer calls"
        dead = []
        for i in range(want):
            ex = explorers.nth(i)
            ex.scroll_into_view_if_needed()
            selects, handles = ex.locator("select"), ex.locator(".noUi-handle, input[type=range]")
            assert selects.count() + handles.count() >= 1, f"{docname}: explorer {i + 1} has no control"
            for j in range(selects.count()):
                sel = selects.nth(j)
                before = ex.evaluate(_SHOWN)
                current = sel.evaluate("s => s.selectedIndex")
                n = sel.locator("option").count()
                changed = False
                for k in [k for k in range(n) if k != current][:3]:   # an option or two may show the same
                    sel.select_option(index=k)
                    page.wait_for_timeout(50)
                    if ex.evaluate(_SHOWN) != before:
                        changed = True
                        break
                sel.select_option(index=current)        # back to the default: each control is tried from there
                page.wait_for_timeout(50)
                report.append(f"explorer {i + 1} dropdown {j + 1}: {'changes' if changed else 'NO CHANGE'}")
                if not changed:
                    dead.append(f"explorer {i + 1}, dropdown {j + 1}")
            for j in range(handles.count()):
                handle = handles.nth(j)
                before = ex.evaluate(_SHOWN)
                changed = False
                for key in ("End", "Home", "ArrowLeft"):
                    handle.focus()
                    page.keyboard.press(key)
                    page.wait_for_timeout(50)
                    if ex.evaluate(_SHOWN) != before:
                        changed = True
                        break
                report.append(f"explorer {i + 1} slider {j + 1}: {'changes' if changed else 'NO CHANGE'}")
                if not changed:
                    dead.append(f"explorer {i + 1}, slider {j + 1}")
            assert ex.evaluate(_SHOWN).strip(), f"{docname}: explorer {i + 1} shows nothing after its controls moved"
    finally:
        page.close()
    print(f"{docname}: " + "; ".join(report))
    assert not dead, f"{docname}: controls that change nothing: {dead}"
    assert not outside, f"{docname}: requests that left the page: {outside[:5]}"
    assert not errors, f"{docname}: JavaScript errors: {errors[:3]}"


def test_the_book_has_its_explorers():
    """The explorers the browser test operates: every explorer of resnet_edu.explorers is called once
    in the book, the three formula explorers among them; a chapter that loses one fails here."""
    from resnet_edu import explorers

    called = [n for d in EXPLORER_PAGES for n in _explorer_names(d)]
    public = {n for n in explorers.__all__ if callable(getattr(explorers, n)) and n[0].islower()} - {
        "explorer", "mode", "ptq_settings_rows", "pt2e_settings_ops", "formula_chart", "module_check", "range_control"}
    assert sorted(called) == sorted(public), called
    assert len(called) == 12 and sum(_formula_calls(d) for d in EXPLORER_PAGES) == 3
