"""The rendered book in a real browser: Debian's chromium, headless, driven by Selenium.

Every page of the built book is opened and checked: MathJax typeset the math (no raw TeX left),
the theorem/definition/lemma/exercise boxes of the source are on the page, every image loaded, no
output shows a Python traceback, and every internal link resolves (file and anchor). A screenshot
of each page is saved in ``_build/screenshots``.
"""
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
BOXES = ("theorem", "definition", "lemma", "corollary", "proposition", "assumption", "remark", "example")


def _pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return files


def _source_text(docname: str) -> str:
    for suffix in (".ipynb", ".md"):
        path = ROOT / (docname + suffix)
        if path.exists():
            if suffix == ".ipynb":
                nb = json.loads(path.read_text())
                return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
            return path.read_text()
    raise FileNotFoundError(docname)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = "install Debian's chromium and chromium-driver (make browser does it as root)"
        if os.environ.get("CI"):
            pytest.fail("the browser test must run in CI: " + message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1300,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_for_mathjax(driver, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.readyState") == "complete")
    script = """
        const done = arguments[arguments.length - 1];
        if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done('none'); return; }
        MathJax.startup.promise.then(() => done('ok')).catch(e => done('error: ' + e));
    """
    driver.set_script_timeout(timeout)
    return driver.execute_async_script(script)


@pytest.mark.book
@pytest.mark.parametrize("docname", _pages())
def test_page_renders(built_book, browser, docname):
    page = built_book / (docname + ".html")
    assert page.exists(), f"{docname} was not built"
    browser.get(page.as_uri())
    html_source = page.read_text()
    has_math = 'class="math' in html_source
    status = _wait_for_mathjax(browser)
    if has_math:
        assert status == "ok", f"{docname}: MathJax did not load ({status}); is sphinx-mathjax-offline enabled?"
        typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
        assert typeset > 0, f"{docname}: the page has math but MathJax typeset none of it"
    text = browser.execute_script("return document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText")
    for raw in ("\\(", "\\)", "\\[", "$$", "\\begin{"):
        assert raw not in text, f"{docname}: raw TeX {raw!r} is visible, MathJax did not typeset it"
    prose = browser.execute_script("""
        const root = (document.querySelector('main') || document.body).cloneNode(true);
        root.querySelectorAll('pre, code, mjx-container, script, style, .cell_output').forEach(e => e.remove());
        return root.innerText;""")
    leftover = re.findall(r"\\(?:Phi|phi|alpha|epsilon|mathbb|mathrm|frac|sqrt|top|ell|theta|tau|gamma|cdot|le|ge|mid|infty)\b", prose)
    assert not leftover, f"{docname}: TeX commands shown as text outside math: {sorted(set(leftover))}"
    dollars = re.findall(r"\$[^$\s][^$\n]{0,80}\$", prose)
    assert not dollars, f"{docname}: dollar-delimited math shown as text: {dollars[:3]}"
    assert "Traceback (most recent call last)" not in text and "Error Traceback" not in text, \
        f"{docname}: an output shows a Python traceback"

    source = _source_text(docname)
    for box in BOXES:
        want = len(re.findall(r"^\s*(?:`{3,}|:{3,})\{prf:%s\}" % box, source, flags=re.M))
        got = browser.execute_script(f"return document.querySelectorAll('div.proof.{box}').length")
        assert got == want, f"{docname}: {want} {box} box(es) in the source but {got} on the page"
    want = len(re.findall(r"^\s*(?:`{3,}|:{3,})\{exercise\}", source, flags=re.M))
    got = browser.execute_script("return document.querySelectorAll('div.exercise').length")
    assert got == want, f"{docname}: {want} exercise box(es) in the source but {got} on the page"

    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))")
    assert not broken, f"{docname}: images that did not load: {broken}"

    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    for href in hrefs:
        url = urlparse(href)
        if url.scheme != "file":
            continue
        target = Path(unquote(url.path))
        if target.is_dir():
            target = target / "index.html"
        assert target.exists(), f"{docname}: link to missing file {href}"
        if url.fragment and target.suffix == ".html":
            ids = set(re.findall(r'id="([^"]+)"', target.read_text()))
            assert unquote(url.fragment) in ids, f"{docname}: link to missing anchor {href}"

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return Math.min(document.body.scrollHeight, 12000)")
    browser.set_window_size(1300, max(1000, height))
    assert browser.save_screenshot(str(SHOTS / (docname.replace("/", "__") + ".png")))
    browser.set_window_size(1300, 1000)


@pytest.mark.book
def test_search_finds_pages(built_book, browser):
    """The book's search page returns results for a word that the chapters use."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((built_book / "search.html").as_uri() + "?q=entropy")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('#search-results li, ul.search li').length") > 0)
    hits = browser.execute_script("return Array.from(document.querySelectorAll('#search-results li a, ul.search li a')).map(a => a.href)")
    assert any("ch02_language_modelling" in h for h in hits), hits[:5]
