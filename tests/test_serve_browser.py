"""The search page in a real browser: Debian's Chromium, headless, driven by selenium through
``/usr/bin/chromedriver``. It loads the page, types a query and sees the result thumbnails (the
ids in the API's order, every image loaded), uploads an image (its own row comes first; the caption
index names it), adds a + term, drops an image on the drop zone, and keeps a screenshot
(``tests/artifacts/serve_page.png``, ignored by git, and in pytest's tmp dir).

Chromium missing is a failure, not a skip: ``.ci/run`` installs ``chromium`` and
``chromium-driver`` with apt-get. The server and index are tests/test_serve.py's
(``serve_support.shared``).
"""

import json
import os
import shutil
import urllib.parse

import pytest

import serve_support as support
from serve_support import get_json

CHROMEDRIVER, CHROMIUM = "/usr/bin/chromedriver", "/usr/bin/chromium"
ARTIFACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts",
                        "serve_page.png")


@pytest.fixture(scope="module")
def served(tiny_run):
    return support.shared(tiny_run)


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMEDRIVER, CHROMIUM) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"{missing} not installed: apt-get install -y chromium chromium-driver "
                    "(.ci/run does)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look anything up online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# True once every result thumbnail has loaded (a broken image has naturalWidth 0).
THUMBNAILS_LOADED = """
const imgs = [...document.querySelectorAll('#results figure img')];
return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
"""
# Drops the thumbnail of arguments[0] on the drop zone, as a file dragged from the desktop.
# (WebDriver waits for the promise the script returns.)
DROP = """
const id = arguments[0];
return (async () => {
  const blob = await (await fetch('/api/thumbnail?id=' + encodeURIComponent(id))).blob();
  const files = new DataTransfer();
  files.items.add(new File([blob], 'dropped.gif', {type: blob.type}));
  document.getElementById('drop').dispatchEvent(
    new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
})();
"""


def _shown(driver):
    from selenium.webdriver.common.by import By
    figures = driver.find_elements(By.CSS_SELECTOR, "#results figure")
    return ([f.get_attribute("data-id") for f in figures],
            [f.find_element(By.CLASS_NAME, "score").text for f in figures])


def _search_done(driver, renders):
    """Waits for render number ``renders`` and its thumbnails."""
    from selenium.webdriver.support.ui import WebDriverWait
    wait = WebDriverWait(driver, 20)
    wait.until(lambda d: d.execute_script(
        "return Number(document.getElementById('results').dataset.renders || 0)") >= renders)
    wait.until(lambda d: d.execute_script(THUMBNAILS_LOADED))


def _assert_page_shows(driver, answer):
    ids, scores = _shown(driver)
    assert ids == [r["id"] for r in answer["results"]]
    assert scores == [f"{r['score']:.3f}" for r in answer["results"]]


def test_page_searches_by_text_and_image_and_keeps_a_screenshot(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    url, driver = served["url"], browser
    driver.get(url + "/")
    WebDriverWait(driver, 20).until(
        lambda d: f"{len(served['images'])} images" in d.find_element(By.ID, "info").text)
    # A typed query: thumbnails of the API's results, in its order, with its scores.
    driver.find_element(By.ID, "text").send_keys("a red circle", Keys.ENTER)
    _search_done(driver, 1)
    answer = get_json(f"{url}/api/search?text=a+red+circle&k=20&weight=1")[1]
    _assert_page_shows(driver, answer)
    status = driver.find_element(By.ID, "status").text
    assert f"{len(answer['results'])} results · text query · query " in status
    assert "ms on the server" in status
    # An uploaded image: its own row first; the caption index's captions listed.
    image_id = next(i for i in served["images"] if i.endswith(".png") and i != support.BIG)
    path = os.path.join(served["root"], *image_id.split("/"))
    driver.find_element(By.ID, "file").send_keys(path)
    _search_done(driver, 2)
    assert _shown(driver)[0][0] == image_id and "image query" in driver.find_element(
        By.ID, "status").text
    WebDriverWait(driver, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#captions li")) == 5)
    captions = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#captions li")]
    assert all(c.split(" (")[0] in support.CAPTIONS for c in captions)
    # A + term on the same image: the API's answer for image + "red".
    driver.find_element(By.ID, "plus").send_keys("red", Keys.ENTER)
    _search_done(driver, 3)
    body, content_type = support.multipart([("plus", "red"), ("weight", "1"), ("k", "20")],
                                           {"image": ("q.png", served["images"][image_id])})
    expected = support.request(url + "/api/search", body, {"Content-Type": content_type})
    _assert_page_shows(driver, json.loads(expected[2]))
    driver.save_screenshot(str(tmp_path / "serve_page.png"))
    # Drag and drop (a file made in the page from another thumbnail); + term cleared.
    driver.find_element(By.ID, "plus").clear()
    dropped = next(i for i in served["images"] if i.endswith(".gif"))
    driver.execute_script(DROP, dropped)
    _search_done(driver, 4)
    assert _shown(driver)[0][0] == dropped
    assert not driver.find_element(By.ID, "error").text
    screenshot = tmp_path / "serve_page.png"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
    shutil.copy(screenshot, ARTIFACT)
    print(f"screenshot: {ARTIFACT}")
    assert urllib.parse.urlsplit(driver.current_url).path == "/"  # never navigated away
