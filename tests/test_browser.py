"""The built book in a browser: every page of _build/html opened from disk in headless Chromium, offline.

A page fails if, once MathJax has finished typesetting, it still shows raw TeX (an equation left as
`\\(...\\)`, `$$` or `\\begin{...}` in its text, or a math element with no typeset output), shows a
MathJax error, throws a JavaScript error, logs an error (a missing local file, say), or asks for
anything from another host.  Requests to other hosts are failed before they leave the browser, and
names resolve to nothing, so the page sees what an offline reader sees.

Runs after the book build: `make browser`, the last step of `make test`.  Needs Chromium (Debian:
`apt-get install chromium`; `.ci/run` installs it) or $CHROMIUM naming the browser.  Chromium is driven
over its DevTools protocol on a pipe (--remote-debugging-pipe), so no Python package is needed.
"""
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
               if p.relative_to(HTML).parts[0] not in ("_static", "_sources", "_images"))
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")
PAGE_TIMEOUT = 60  # seconds for one page to load and typeset


def find_chromium():
    """The Chromium (or Chrome) binary: $CHROMIUM, else the first of the usual names on PATH, else None."""
    names = [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome",
             "google-chrome-stable"]
    return next((shutil.which(n) for n in names if n and shutil.which(n)), None)


class DevTools:
    """Chromium started headless with its DevTools protocol on a pipe: fd 3 carries commands in, fd 4 answers
    and events out, each message JSON ending in a NUL byte.  `send` waits for a command's answer and keeps
    every event in `events`, tagged with the page (session) it came from."""

    def __init__(self, binary, profile):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # Move the browser's ends above 4, so that putting them at 3 and 4 in the child overwrites neither.
        to_browser, from_browser = (self._above(fd, 10) for fd in (to_browser, from_browser))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                 f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", "--disable-default-apps", "--disable-quic", "--mute-audio",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"]  # no name resolves: nothing leaves

        def pipe_at_3_and_4():  # runs in the child before exec; dup2 leaves 3 and 4 open across exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.log = Path(profile) / "chromium.log"  # the browser's own messages, shown if it dies
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([binary, *flags], preexec_fn=pipe_at_3_and_4, close_fds=False,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    @staticmethod
    def _above(fd, lowest):
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
        os.close(fd)
        return moved

    def send(self, method, session=None, timeout=30, **params):
        """Run one DevTools command (on page `session`, or on the browser); returns its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        answer = self._receive_until(lambda m: m.get("id") == self._next_id, timeout, method)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def wait_for(self, method, session, timeout, nth=1):
        """Wait for the `nth` event `method` from page `session` (counting those already received)."""
        seen = lambda: sum(e["method"] == method and e.get("sessionId") == session for e in self.events)
        if seen() < nth:
            self._receive_until(lambda m: seen() >= nth, timeout, method)

    def _receive_until(self, wanted, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                    self._answer_paused_request(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {what} within {timeout} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium closed its DevTools pipe; it said:\n{tail}")
            self._buffer += chunk

    def _answer_paused_request(self, message):
        """Fetch.requestPaused: a request to another host, held by the browser; fail it, never let it out."""
        if message["method"] == "Fetch.requestPaused":
            params = {"requestId": message["params"]["requestId"], "errorReason": "InternetDisconnected"}
            reply = {"id": 0, "method": "Fetch.failRequest", "sessionId": message["sessionId"], "params": params}
            os.write(self._write, json.dumps(reply).encode() + b"\0")

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


# Runs in the page once it has loaded: waits for MathJax to finish, then reports what a reader would see.
REPORT = r"""
(async () => {
  if (!document.body) return null;  // a redirect page, already on its way to the next one
  const start = Date.now();
  const hasMath = document.querySelector(".math") !== null;
  const started = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
  while (hasMath && !started() && Date.now() - start < 20000) await new Promise(r => setTimeout(r, 50));
  if (started()) await MathJax.startup.promise;  // resolves once the first typesetting is done
  // Text a reader sees, leaving out code and program output, where TeX may stand as code.
  const skip = "pre, code, script, style, noscript, textarea, mjx-container, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT,
    {acceptNode: n => n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT
                                                                       : NodeFilter.FILTER_ACCEPT});
  const texts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) texts.push(n.textContent);
  const untypeset = [...document.querySelectorAll(".math")].filter(e => !e.querySelector("mjx-container"));
  return {
    mathjax: Boolean(window.MathJax && MathJax.version), hasMath,
    text: texts.join(" "),
    untypeset: untypeset.map(e => e.textContent.slice(0, 80)),
    mathErrors: [...document.querySelectorAll("mjx-merror")]
                  .map(e => e.getAttribute("data-mjx-error") || e.textContent),
  };
})()
"""
RAW_TEX = ["$$", "\\begin{", "\\end{", "\\(", "\\)", "\\[", "\\]", "\\frac", "\\odot"]


@pytest.fixture(scope="module")
def browser():
    if not (HTML / "index.html").is_file():
        pytest.skip("no built book in _build/html: run `make book` first (`make test` runs this test after it)")
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found: install it (on Debian: `apt-get install chromium`) "
                    "or set $CHROMIUM to a Chromium or Chrome binary")
    with tempfile.TemporaryDirectory(prefix="lstm-lab-chromium-") as profile:
        devtools = DevTools(binary, profile)
        try:
            yield devtools
        finally:
            devtools.close()


def open_offline(devtools, url):
    """Open `url` in a new tab with every request to another host failed; returns the tab's session id."""
    target = devtools.send("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.send(f"{domain}.enable", session)
    devtools.send("Network.emulateNetworkConditions", session, offline=True, latency=0,
                  downloadThroughput=-1, uploadThroughput=-1)
    devtools.send("Fetch.enable", session, patterns=[{"urlPattern": "http*"}, {"urlPattern": "ws*"}])
    devtools.send("Page.navigate", session, url=url)
    return target, session


def problems_on(devtools, session, report):
    """Every reason to fail the page: raw TeX, math errors, JavaScript and logged errors, remote requests."""
    found = []
    events = [e for e in devtools.events if e.get("sessionId") == session]
    for e in events:
        params = e["params"]
        if e["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details["text"]
            found.append(f"JavaScript error: {description}")
        elif e["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            words = (str(a.get("value", a.get("description"))) for a in params["args"])
            found.append("console.error: " + " ".join(words))
        elif e["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"browser error: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif e["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(LOCAL_SCHEMES):
                found.append(f"request to another host: {url}")
    if report["hasMath"] and not report["mathjax"]:
        found.append("the page has math but MathJax did not load")
    found += [f"equation not typeset: {text!r}" for text in report["untypeset"]]
    found += [f"MathJax error: {text}" for text in report["mathErrors"]]
    for pattern in RAW_TEX:
        at = report["text"].find(pattern)
        if at >= 0:
            found.append(f"raw TeX {pattern!r} in the text: ...{report['text'][max(0, at - 60):at + 60]}...")
    return list(dict.fromkeys(found))


def loaded_page_report(devtools, session, redirects=3):
    """Wait for the page to load and typeset, then run REPORT in it; follows a redirect page (index.html)."""
    for loads in range(1, redirects + 2):
        devtools.wait_for("Page.loadEventFired", session, PAGE_TIMEOUT, nth=loads)
        try:
            report = devtools.send("Runtime.evaluate", session, timeout=PAGE_TIMEOUT, expression=REPORT,
                                   awaitPromise=True, returnByValue=True)
        except RuntimeError as error:  # the page navigated away while REPORT ran: wait for the next one
            if "context" in str(error).lower():
                continue
            raise
        if "exceptionDetails" in report:
            raise AssertionError(f"the page check itself failed: {report['exceptionDetails']}")
        if report["result"].get("value") is None:
            continue
        time.sleep(0.3)  # errors from the page's last scripts arrive
        devtools.send("Runtime.evaluate", session, expression="0")
        return report["result"]["value"]
    raise AssertionError(f"the page navigated more than {redirects} times")


@pytest.mark.parametrize("page", PAGES or ["(no pages built)"])
def test_page_renders_offline_with_no_raw_tex_or_errors(browser, page):
    target, session = open_offline(browser, (HTML / page).as_uri())
    try:
        report = loaded_page_report(browser, session)
        problems = problems_on(browser, session, report)
    finally:
        browser.send("Target.closeTarget", targetId=target)
    shown = problems[:25] + ([f"... and {len(problems) - 25} more"] if len(problems) > 25 else [])
    assert not problems, f"{page}:\n  " + "\n  ".join(shown)


def test_the_pages_and_their_mathjax_are_there():
    """Guards the page test against passing on nothing: chapter 1 was built, and MathJax beside it."""
    if not (HTML / "index.html").is_file():
        pytest.skip("no built book in _build/html: run `make book` first")
    assert "chapters/01_lstm_cell.html" in PAGES
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not bundled with the pages"


def test_no_page_leaves_a_blank_widget():
    """A widget view needs a kernel and widget JavaScript the pages do not load: it would show as a blank
    area.  The book renders widgets' text/html picture instead (chapter 1's gate explorer)."""
    if not (HTML / "index.html").is_file():
        pytest.skip("no built book in _build/html: run `make book` first")
    for page in PAGES:
        assert 'type="application/vnd.jupyter.widget-view+json"' not in (HTML / page).read_text(), page
    assert "lstm-lab-widget-picture" in (HTML / "chapters" / "01_lstm_cell.html").read_text()
