"""The web page in a real headless Chromium against a real coordinator and the real local agent pair.

Few tests, each several checks on one page load: the browser and the coordinators start once per module.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.local_cluster import DEMO_MODEL
from tests.coordinator.conftest import spec
from tests.web.conftest import VIEWPORT, WebCoordinator
from tests.web.pages import PASSWORD

pytestmark = pytest.mark.slow

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
# Records every queue row's state and bar value as the page changes them (no reload in between).
_RECORD = """() => {
  window.__marker = 'same page';
  window.__seen = {};
  setInterval(() => {
    document.querySelectorAll('tr[data-job]').forEach(tr => {
      const seen = window.__seen[tr.dataset.job] = window.__seen[tr.dataset.job] || [];
      const entry = tr.querySelector('.state').textContent + ' ' + tr.querySelector('progress').value;
      if (seen[seen.length - 1] !== entry) seen.push(entry);
    });
  }, 15);
}"""


@pytest.fixture(scope="module")
def context(live: WebCoordinator, stuck: WebCoordinator, browser: Any) -> Iterator[Any]:
    # The coordinators start first: their start-up uses asyncio.run, which Playwright's sync API
    # forbids in this thread once it runs (it keeps an event loop here).
    # The page's CSP forbids eval, which Playwright's wait_for_function needs; bypassing it also makes the XSS
    # checks stricter (an unescaped script would run). The CSP header itself is checked in test_pages.py.
    ctx = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    ctx.set_default_timeout(30_000)
    try:
        yield ctx
    finally:
        ctx.close()


def log_in(page: Any, site: WebCoordinator) -> None:
    page.goto(f"{site.url}/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/")


def fill_job(page: Any, prompt: str, frames: str = "17", steps: str = "6", codec: str = "h264") -> None:
    page.fill("textarea[name=prompt]", prompt)
    page.select_option("select[name=model]", DEMO_MODEL)
    page.select_option("select[name=size]", "64x64")
    page.fill("input[name=frames]", frames)
    page.fill("input[name=steps]", steps)
    page.fill("input[name=guidance]", "1")
    page.select_option("select[name=upscale]", "4")
    page.select_option("select[name=codec]", codec)


def test_login_submit_watch_play_and_seek(context: Any, live: WebCoordinator, screenshots: Path) -> None:
    page = context.new_page()
    # A wrong password is refused, and says so.
    page.goto(f"{live.url}/login")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    assert page.locator("#login-error").inner_text() == "wrong password"
    page.screenshot(path=screenshots / "login.png")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")

    # The queue open in a second tab: the new job's row must appear and its bar move to done, live.
    queue = context.new_page()
    queue.goto(f"{live.url}/")
    queue.wait_for_function("document.getElementById('live').className === 'live on'")
    queue.evaluate(_RECORD)

    page.goto(f"{live.url}/submit")
    seed = page.input_value("input[name=seed]")
    assert seed.isdigit()  # a random seed, shown
    assert DEMO_MODEL in page.locator("select[name=model]").inner_text()  # the models the agents report
    # Enough steps for the bar to be seen between 0 and 100: the scheduler sends a few progress events a
    # second, and the page gathers what comes within 50 ms into one write (web/events.py).
    fill_job(page, "a red fox in snow", steps="60")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f]{12}$"))
    job_id = page.url.rsplit("/", 1)[1]

    row = queue.locator(f"#job-{job_id} .state")
    row.wait_for()
    queue.wait_for_function(f"document.querySelector('#job-{job_id} .state').textContent === 'done'", timeout=60_000)
    # The recorder samples every 15 ms: let it see the row as it ended.
    queue.wait_for_function(f"(window.__seen['{job_id}'] || []).slice(-1)[0].startsWith('done')", timeout=5_000)
    seen = queue.evaluate(f"window.__seen['{job_id}']")
    assert queue.evaluate("window.__marker") == "same page"  # never reloaded
    bars = [float(s.split()[1]) for s in seen if s.startswith("running")]
    assert len(set(bars)) >= 3 and any(0 < b < 100 for b in bars), seen  # it moved
    assert seen[-1] == "done 100", seen
    queue.screenshot(path=screenshots / "queue.png")
    queue.close()

    # The job page: the video plays, and seeking fetches a range (206).
    ranges: list[tuple[int, str]] = []
    page.on("response", lambda r: ranges.append((r.status, r.request.headers.get("range", "")))
            if "/video/" in r.url else None)
    page.goto(f"{live.url}/jobs/{job_id}")
    video = page.locator("#video-0")
    video.wait_for()
    page.wait_for_function("document.getElementById('video-0').readyState >= 1")
    duration = page.evaluate("document.getElementById('video-0').duration")
    assert duration > 0
    page.evaluate("() => { const v = document.getElementById('video-0'); v.muted = true; return v.play(); }")
    page.wait_for_function("document.getElementById('video-0').currentTime > 0.2")
    page.evaluate("() => document.getElementById('video-0').pause()")
    page.evaluate("""() => new Promise(done => { const v = document.getElementById('video-0');
        v.addEventListener('seeked', () => done(v.currentTime), {once: true}); v.currentTime = v.duration * 0.75; })""")
    assert any(status == 206 and value.startswith("bytes=") for status, value in ranges), ranges
    poster = page.request.get(f"{live.url}/jobs/{job_id}/poster/0.jpg")
    assert poster.status == 200 and poster.headers["content-type"] == "image/jpeg"
    assert page.locator("text=Submit again with changes").count() == 1
    page.screenshot(path=screenshots / "job.png")

    page.goto(f"{live.url}/gallery")
    assert page.locator(f"a.tile[href='/jobs/{job_id}'] img").count() == 1
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=screenshots / "gallery.png")

    page.goto(f"{live.url}/agents")
    for name in ("a", "b"):
        assert page.locator(f"[data-agent='{name}'] [data-k=state]").inner_text() == "up"
    page.wait_for_function("document.getElementById('live').className === 'live on'")  # refreshed live
    # The pair's round trip, as the coordinator had one agent probe the other, arrives with a refresh.
    page.wait_for_function("""() => document.querySelector("[data-agent='a'] [data-k=links]")
                                 .innerText.includes('to b: RTT p50 ')""", timeout=20_000)
    page.screenshot(path=screenshots / "agents.png")
    page.close()


def test_queued_job_cancel_validation_xss_csrf_and_paths(context: Any, stuck: WebCoordinator,
                                                          screenshots: Path) -> None:
    page = context.new_page()
    log_in(page, stuck)
    page.goto(f"{stuck.url}/submit")
    # A validation error appears beside its field, from the coordinator's own checks; the values stay.
    fill_job(page, XSS, frames="6")
    page.click("#submit-button")
    error = page.locator("label:has(input[name=frames]) .error")
    assert "frames must be 4k+1" in error.inner_text()
    assert page.input_value("textarea[name=prompt]") == XSS
    page.screenshot(path=screenshots / "submit.png")
    page.fill("input[name=frames]", "5")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r".*/jobs/[0-9a-f]{12}$"))
    job_id = page.url.rsplit("/", 1)[1]

    # The XSS prompt is text, on the job page and in the queue; nothing of it ran.
    assert page.locator(".prompt-full").inner_text() == XSS
    page.goto(f"{stuck.url}/?state=queued")
    assert page.locator(f"#job-{job_id} .prompt").inner_text() == XSS
    assert page.evaluate("window.__xss") is None

    # A state change without the CSRF token is refused (the cookie alone is not enough).
    refused = page.request.post(f"{stuck.url}/jobs/{job_id}/cancel", form={"next": "/"}, max_redirects=0)
    assert refused.status == 403
    assert page.locator(f"#job-{job_id} .state").inner_text() == "queued"

    # Raise its priority, then cancel it from the queue page.
    page.click(f"#job-{job_id} button[data-action=priority]")
    page.wait_for_url(re.compile(r".*/\?state=queued&msg=.*"))
    assert page.locator(f"#job-{job_id} .priority").inner_text() == "1"
    page.click(f"#job-{job_id} button[data-action=cancel]")
    page.wait_for_url(re.compile(r".*msg=.*cancelled"))
    assert page.locator(f"#job-{job_id}").count() == 0  # the filter shows queued jobs only
    page.goto(f"{stuck.url}/jobs/{job_id}")
    assert page.locator("#job-state").inner_text() == "cancelled"

    # No URL reaches a file outside the outputs: `..`, encoded or not, and absolute paths.
    for path in (f"/jobs/{job_id}/video/../../../../etc/passwd", "/jobs/..%2F..%2F..%2Fetc%2Fpasswd/video/0",
                 f"/jobs/{job_id}/video/%2Fetc%2Fpasswd", "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                 "/static/../../../etc/passwd", "//etc/passwd", f"/jobs/{job_id}/poster/..%2F0.jpg",
                 "/static/%2Fetc%2Fpasswd"):
        reply = page.request.get(stuck.url + path, max_redirects=0)
        assert reply.status in (400, 404, 405), (path, reply.status)
        assert "root:" not in reply.text()
    t0 = time.monotonic()
    page.close()
    assert time.monotonic() - t0 < 5


def test_the_queue_page_reconnects_after_a_coordinator_restart(context: Any, live: WebCoordinator) -> None:
    page = context.new_page()
    log_in(page, live)
    page.wait_for_function("document.getElementById('live').className === 'live on'")
    page.evaluate("window.__marker = 'same page'")
    # Restarted from another thread: Coordinator.start uses asyncio.run, which Playwright's thread may not.
    restart = threading.Thread(target=lambda: (live.stop(), live.start()))
    restart.start()
    page.wait_for_function("document.getElementById('live').className === 'live off'")
    restart.join(60)
    page.wait_for_function("document.getElementById('live').className === 'live on'")
    # Still logged in (the session key is on disk), and a job submitted now appears without a reload.
    job_id = live.client().submit(spec("after the restart"))
    page.locator(f"#job-{job_id}").wait_for()
    assert page.evaluate("window.__marker") == "same page"
    page.close()
