"""The pages through Starlette's TestClient over a real store and scheduler: escaping, files, forms, the queue."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.messages import JobEvent
from artifex_agent.jobspec import JobSpec
from tests.web.pages import Pages, pages, write_mp4

XSS = "<script>alert(1)</script>"
FORM = {"prompt": "a fox", "negative": "", "model": "wan2.2-tiny", "size": "64x64", "width": "64", "height": "64",
        "frames": "5", "steps": "1", "guidance": "1", "seed": "7", "upscale": "1", "codec": "h264", "split": "none",
        "priority": "0"}


def submit(p: Pages, token: str, files: dict[str, tuple[str, bytes, str]] | None = None, **changes: str) -> Any:
    return p.client.post("/submit", data={**FORM, "csrf": token, **changes}, files=files, follow_redirects=False)


def test_prompts_file_names_and_errors_are_escaped_everywhere(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        named = write_mp4(p.outputs / f"{XSS}.mp4")
        done = p.finished_job(XSS, [str(named)])
        # A drop-folder job: its only name is the dropped file's.
        drop = Job.submitted("drop00000001", JobSpec(prompts=[], post_input=f"drop/{XSS}.mp4"), 1000.0)
        p.store.insert(drop, drop.spec.content_key(), JobEvent(drop.id, "state", "queued", time=1000.0))
        drop.start("a", "a", "", 1001.0)
        drop.fail(f"cannot read drop/{XSS}.mp4", 1002.0)
        p.store.save(drop, JobEvent(drop.id, "state", "failed", message=f"cannot read {XSS}", time=1002.0))
        queued = submit(p, token, prompt=XSS).headers["location"]
        for url in ("/", "/?state=failed", f"/jobs/{done.id}", f"/jobs/{drop.id}", queued, "/gallery",
                    f"/submit?from={done.id}"):
            page = p.client.get(url).text
            assert XSS not in page, url
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, url
        invalid = submit(p, token, prompt=XSS, frames="6")
        assert invalid.status_code == 400 and XSS not in invalid.text
        headers = p.client.get("/").headers
        assert "script-src" not in headers["content-security-policy"]  # default-src 'self': no inline script
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_a_video_is_served_with_ranges_and_nothing_outside_the_roots_is(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        p.login()
        video = write_mp4(p.outputs / "clip.mp4")
        outside = tmp_path / "private.mp4"
        outside.write_bytes(b"secret")
        (p.outputs / "escape.mp4").symlink_to(outside)
        job = p.finished_job("fox", [str(video), str(outside), str(p.outputs / "escape.mp4"),
                                     str(p.outputs / ".." / "private.mp4")])
        whole = p.client.get(f"/jobs/{job.id}/video/0")
        assert whole.status_code == 200 and whole.content == video.read_bytes()
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
        part = p.client.get(f"/jobs/{job.id}/video/0", headers={"range": "bytes=100-299"})
        assert part.status_code == 206 and part.content == video.read_bytes()[100:300]
        assert part.headers["content-range"] == f"bytes 100-299/{video.stat().st_size}"
        tail = p.client.get(f"/jobs/{job.id}/video/0", headers={"range": "bytes=-50"})
        assert tail.status_code == 206 and tail.content == video.read_bytes()[-50:]
        assert p.client.get(f"/jobs/{job.id}/video/0", headers={"range": "bytes=99999999-"}).status_code == 416
        download = p.client.get(f"/jobs/{job.id}/video/0?download=1")
        assert download.headers["content-disposition"].startswith("attachment")
        for n in (1, 2, 3, 4, -1):
            assert p.client.get(f"/jobs/{job.id}/video/{n}").status_code == 404, n
        for url in (f"/jobs/{job.id}/video/..%2F..%2Fprivate.mp4", f"/jobs/..%2F..%2F{job.id}/video/0",
                    f"/jobs/{job.id}/video/%2Fetc%2Fpasswd", "/jobs/%2Fetc%2Fpasswd/video/0",
                    "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/app.py",
                    f"/jobs/{job.id}/poster/..%2F1.jpg", f"/jobs/{job.id}/poster/1.jpg"):
            reply = p.client.get(url)
            assert reply.status_code in (400, 404), url
            assert b"secret" not in reply.content and b"root:" not in reply.content, url
        poster = p.client.get(f"/jobs/{job.id}/poster/0.jpg")
        assert poster.status_code == 200 and poster.content[:3] == b"\xff\xd8\xff"
        job_page = p.client.get(f"/jobs/{job.id}").text
        assert "outside the output roots" in job_page and f"/jobs/{job.id}/video/0" in job_page


def test_validation_problems_stand_beside_their_fields_and_the_values_stay(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        reply = submit(p, token, prompt="keep me", size="custom", width="70", frames="6", steps="abc",
                       guidance="0.5")
        assert reply.status_code == 400
        page = reply.text
        assert '<p class="error" data-field="steps">steps must be a whole number' in page
        # The number problems stop the form before the queue's checks: fix them, and those speak.
        reply = submit(p, token, prompt="keep me", size="custom", width="70", frames="6", guidance="0.5")
        page = reply.text
        for name, words in (("width", "width must be a multiple of 16"), ("frames", "frames must be 4k+1"),
                            ("guidance", "guidance must be at least 1.0")):
            assert f'<p class="error" data-field="{name}">{words}' in page, name
        assert ">keep me</textarea>" in page and 'name="width" value="70"' in page
        assert p.client.get("/?state=queued").text.count('data-job="') == 0  # nothing was queued


def test_uploads_are_size_limited_and_must_be_images(tmp_path: Path) -> None:
    with pages(tmp_path, upload_mib=1) as p:
        token = p.login()
        not_image = submit(p, token, files={"image": ("x.png", b"#!/bin/sh\necho hi\n", "image/png")})
        assert 'data-field="image">image must be a PNG or JPEG' in not_image.text
        fake = submit(p, token, files={"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")})
        assert 'data-field="image">image does not decode' in fake.text
        big = submit(p, token, files={"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (3 << 20), "image/png")})
        assert big.status_code == 413
        png = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(png, "PNG")
        ok = submit(p, token, files={"image": ("fox.png", png.getvalue(), "image/png")})
        assert ok.status_code == 303
        job = p.client.get(ok.headers["location"])
        assert job.status_code == 200
        stored = p.store.get(ok.headers["location"].rsplit("/", 1)[1])
        assert stored is not None and stored.spec.image_data == png.getvalue()


def test_the_queue_filters_by_state_and_the_gallery_pages_newest_first(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        video = write_mp4(p.outputs / "clip.mp4", frames=2)
        done = [p.finished_job(f"clip {i}", [str(video)], job_id=f"done{i:08d}") for i in range(30)]
        queued = submit(p, token).headers["location"].rsplit("/", 1)[1]
        only_queued = p.client.get("/?state=queued").text
        assert f'data-job="{queued}"' in only_queued and 'data-job="done' not in only_queued
        everything = p.client.get("/?state=nonsense").text  # an unknown state: no filter
        assert f'data-job="{queued}"' in everything and f'data-job="{done[-1].id}"' in everything
        first, second = p.client.get("/gallery").text, p.client.get("/gallery?page=2").text
        assert first.count('class="tile"') == 24 and second.count('class="tile"') == 6
        assert first.index(done[29].id) < first.index(done[28].id) and done[0].id in second
        assert "?page=2" in first and "?page=3" not in second
        assert p.client.get("/gallery?page=x").status_code == 200


def test_submit_again_with_changes_prefills_the_form(tmp_path: Path) -> None:
    with pages(tmp_path) as p:
        token = p.login()
        job = submit(p, token, prompt="a heron", seed="1234", frames="9").headers["location"]
        form = p.client.get(f"/submit?from={job.rsplit('/', 1)[1]}").text
        assert ">a heron</textarea>" in form and 'name="seed" value="1234"' in form
        assert 'name="frames" value="9"' in form
        assert p.client.get("/submit?from=nope").status_code == 404
        assert p.client.get("/jobs/nope").status_code == 404
        assert p.client.get("/healthz").text == "ok"
