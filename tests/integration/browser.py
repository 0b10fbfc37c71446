"""Open a page in headless Chromium (Debian's chromium + chromium-driver, through Selenium) and say what
a person would see: the DOM, a screenshot, every request and failure, the console's errors, and what
opening one matrix cell shows. Run inside a network namespace of its own (no network but loopback,
which chromedriver needs), by test_report_browser.py:

    python -m tests.integration.browser URL SCREENSHOT CELL_ID  ->  JSON on stdout
"""
import json
import sys
import tempfile

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# As root Chromium needs --no-sandbox; the rest keep it from reaching for a network it does not have
# (it would otherwise hang on the closed network here).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def look(url: str, screenshot: str, cell: str) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="kmod-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get_log("performance")  # drain what the browser's own start-up page did
        driver.get(url)
        dom = driver.execute_script("return document.documentElement.outerHTML")
        sel = f'td[data-cell="{cell}"]'
        detail = driver.find_element(By.CSS_SELECTOR, f"{sel} .detail")
        shown_before = detail.is_displayed()
        driver.find_element(By.CSS_SELECTOR, f"{sel} summary").click()
        opened = {"shown": detail.is_displayed(), "text": detail.text}
        colours = driver.execute_script(
            "const out = {};"
            "for (const el of document.querySelectorAll('#counts .st')) {"
            "  out[el.parentElement.dataset.state] = getComputedStyle(el).backgroundColor; }"
            "return out;")
        driver.save_screenshot(screenshot)
        events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        # Everything the page itself asked for (its own load included) and what of that failed.
        mine = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent" and e["params"].get("documentURL") == url}
        console = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        return {
            "dom": dom, "detail_shown_before": shown_before, "opened": opened, "colours": colours,
            "requests": sorted(mine.values()),
            "failed": [{**e["params"], "url": mine[e["params"]["requestId"]]} for e in events
                       if e["method"] == "Network.loadingFailed" and e["params"]["requestId"] in mine],
            "console_errors": console,
        }
    finally:
        driver.quit()


if __name__ == "__main__":
    json.dump(look(*sys.argv[1:4]), sys.stdout)
