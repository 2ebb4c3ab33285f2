"""Live previews and the time left on the pages: the preview route, its login and type, the rows, the events."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.jobspec import JobSpec
from artifex_agent.web import events
from artifex_agent.web.views import ProgressBoard
from tests.coordinator.conftest import spec
from tests.web.conftest import VIEWPORT, WebCoordinator
from tests.web.pages import Pages, bare_cluster, open_scheduler, pages
from tests.web.test_browser import log_in
from tests.web.test_events import parse
from tests.web.test_pages import FORM, submit


def webp(shade: int) -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (32, 18), (shade, i * 60, 0)) for i in range(3)]
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def running_job(p: Pages, token: str, preview: bytes = b"", mime: str = "image/webp", eta_s: float = 0.0) -> str:
    """A job submitted through the form, then running as the scheduler would have it, with a progress event."""
    job_id = submit(p, token).headers["location"].rsplit("/", 1)[1]
    scheduler = p.web.queue.scheduler
    job = scheduler.entries[job_id].job
    job.start("a", "a", "", time.time())
    if eta_s:
        job.expected_end = time.time() + eta_s
    scheduler.bus.publish(JobEvent(job_id, "progress", "running", stage="denoise", step=3, total=10, time=time.time(),
                                   preview=preview, preview_mime=mime if preview else "", preview_step=3,
                                   eta_s=eta_s))
    return job_id


def test_the_preview_route_serves_the_newest_bytes_with_their_type_to_a_logged_in_page(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        job_id = running_job(p, token, webp(40))
        newer = webp(220)
        p.web.previews.put(job_id, newer, "image/webp", 5)
        version = p.web.previews.get(job_id).version  # type: ignore[union-attr]
        reply = p.client.get(f"/jobs/{job_id}/preview?v={version}")
        assert reply.status_code == 200 and reply.content == newer
        assert reply.headers["content-type"] == "image/webp" and reply.headers["x-content-type-options"] == "nosniff"
        # Whatever type an agent claims, only picture types are served as such.
        p.web.previews.put(job_id, b"<script>alert(1)</script>", "text/html", 6)
        assert p.client.get(f"/jobs/{job_id}/preview").headers["content-type"] == "application/octet-stream"
        # A job without one, and no job at all: 404.
        quiet = running_job(p, token)
        assert p.client.get(f"/jobs/{quiet}/preview").status_code == 404
        assert p.client.get("/jobs/nosuchjob/preview").status_code == 404
        # Logged out: 401, never the picture.
        p.client.cookies.clear()
        refused = p.client.get(f"/jobs/{job_id}/preview", follow_redirects=False)
        assert refused.status_code == 401 and refused.content != newer


def test_the_queue_row_and_the_job_page_show_the_preview_and_the_time_left(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        job_id = running_job(p, token, webp(90), eta_s=125.0)
        url = f"/jobs/{job_id}/preview?v={p.web.previews.get(job_id).version}"  # type: ignore[union-attr]
        queue = p.client.get("/").text
        row = queue[queue.index(f'id="job-{job_id}"'):]
        row = row[:row.index("</tr>")]
        assert f'<img class="preview" alt="live preview" src="{url}">' in row
        assert "2 min 0" in row and " left</td>" in row
        page = p.client.get(f"/jobs/{job_id}").text
        assert f'id="job-preview" class="preview large" alt="live preview" src="{url}"' in page
        assert "2 min 0" in page and " left</span>" in page
        # A queued job has neither: the img is there for the page's script to fill, hidden.
        queued = submit(p, token).headers["location"].rsplit("/", 1)[1]
        page = p.client.get(f"/jobs/{queued}").text
        assert 'id="job-preview" class="preview large" alt="live preview" hidden>' in page


def test_the_submit_form_asks_for_previews_by_default(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        assert 'name="preview_every" value="5"' in p.client.get("/submit").text
        job_id = submit(p, token, preview_every="5").headers["location"].rsplit("/", 1)[1]
        assert p.web.queue.scheduler.entries[job_id].job.spec.preview_every == 5
        # A form without the field (sent before previews existed) asks for none.
        assert "preview_every" not in FORM
        plain = submit(p, token).headers["location"].rsplit("/", 1)[1]
        assert p.web.queue.scheduler.entries[plain].job.spec.preview_every == 0
        bad = submit(p, token, preview_every="often")
        assert bad.status_code == 400 and "preview_every must be a whole number" in bad.text


def test_the_event_stream_sends_a_preview_url_and_the_agents_time_left_never_the_bytes(tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        scheduler = open_scheduler(bare_cluster(tmp_path))
        queue = JobQueue(scheduler)
        board, stopping = ProgressBoard(), asyncio.Event()
        job, _ = await queue.submit(JobSpec(prompts=["live"], width=64, height=64, frames=5))

        async def snapshot() -> Any:
            return []

        stream = events.stream(scheduler, board, job.id, stopping, snapshot, None)
        await anext(stream), await anext(stream)  # retry:, the snapshot
        big = webp(10) + b"\0" * 50_000  # a preview of ~50 kB must not make a 50 kB event
        scheduler.bus.publish(JobEvent(job.id, "progress", "running", stage="denoise", step=4, total=8,
                                       time=time.time(), preview=big, preview_mime="image/webp", preview_step=4,
                                       eta_s=75.0))
        chunk = await anext(stream)
        stopping.set()
        scheduler.store.close()
        assert len(chunk) < 1000
        return [data for _, data in parse(chunk)]

    (event,) = asyncio.run(scenario())
    assert event["preview"].startswith("/jobs/") and "/preview?v=" in event["preview"]
    assert event["eta"] == "1 min 15 s"
    assert "AAAA" not in json.dumps(event)


# Notes, for every queue row, each preview URL and time left the page showed (no reload in between).
_RECORD = """() => {
  window.__shown = {};
  setInterval(() => {
    document.querySelectorAll('tr[data-job]').forEach(tr => {
      const img = tr.querySelector('img.preview');
      const id = tr.dataset.job;
      const seen = window.__shown[id] = window.__shown[id] || {previews: [], loaded: 0, left: []};
      if (img && !img.hidden && img.src && !seen.previews.includes(img.src)) seen.previews.push(img.src);
      if (img && !img.hidden && img.complete && img.naturalWidth > 0) seen.loaded += 1;
      const left = tr.querySelector('.eta').textContent;
      if (left && !seen.left.includes(left)) seen.left.push(left);
    });
  }, 10);
}"""


@pytest.mark.slow
def test_a_queue_page_shows_a_running_jobs_previews_and_time_left_live(live: WebCoordinator, browser: Any) -> None:
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)  # wait_for_function needs eval
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        log_in(page, live)
        page.wait_for_function("document.getElementById('live').className === 'live on'")
        page.evaluate(_RECORD)
        # Long enough for several previews (an agent makes one at most every quarter second).
        job_id = live.client().submit(spec("a fox on the page", width=64, height=64, frames=17, steps=120,
                                           preview_every=4))
        page.wait_for_function(f"document.querySelector('#job-{job_id} .state')?.textContent === 'done'",
                               timeout=60_000)
        shown = page.evaluate(f"window.__shown['{job_id}']")
        # Several pictures, each a new URL of this site, shown loaded; the bytes never came in the events.
        assert len(shown["previews"]) >= 2 and shown["loaded"] > 0, shown
        assert all(f"/jobs/{job_id}/preview?v=" in url for url in shown["previews"])
        assert any(text.endswith(" left") for text in shown["left"]), shown
        # Once done, the row no longer shows a preview (the video is the job's picture now).
        assert page.evaluate(f"document.querySelector('#job-{job_id} img.preview').hidden")
    finally:
        context.close()
