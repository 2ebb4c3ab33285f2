"""The web page's routes (docs/web.md lists them; bench/web.py relies on them staying put).

Every read and write goes through the coordinator's JobQueue, the object the gRPC Jobs service calls:
submit, cancel, retry and priority here are those same methods, with their checks and their errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.jobs import JobQueue
from artifex_agent.coordinator.previews import PreviewStore
from artifex_agent.coordinator.urgency import Urgency
from artifex_agent.engines.models import WAN_SIZE_RULES, SizeRules
from artifex_agent.errors import ArtifexError, NotFoundError, RequestError
from artifex_agent.jobspec import JobProblems
from artifex_agent.vocabulary import JOB_STATES
from artifex_agent.web import events, forms
from artifex_agent.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Auth, Session
from artifex_agent.web.files import OutputFiles, output_roots
from artifex_agent.web.views import ProgressBoard, agents_view, job_view, video_models

QUEUE_PAGE = 100
GALLERY_PAGE = 24
# Security headers on every answer: no inline script runs (all JS is static/app.js), no framing.
_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff", "referrer-policy": "same-origin", "x-frame-options": "DENY",
}
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
PREVIEW_TYPES = ("image/webp", "image/jpeg", "image/png")

Handler = Callable[[Request, "Web", Session], Awaitable[Response]]


@dataclass
class Web:
    """What the routes need: the job queue, login, files, live progress."""

    queue: JobQueue
    auth: Auth
    files: OutputFiles
    upload_limit: int
    board: ProgressBoard = field(default_factory=ProgressBoard)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def urgency(self) -> Urgency:
        """The scheduler's work in flight: page work waits for it (coordinator/urgency.py)."""
        return self.queue.scheduler.urgency

    @property
    def previews(self) -> PreviewStore:
        """Each running job's newest live preview, as the coordinator keeps it (in memory only)."""
        return self.queue.scheduler.bus.previews

    def view(self, job: Job, now: float | None = None) -> dict[str, Any]:
        """The job as a row or a page shows it: with its live progress and preview, if running."""
        return job_view(job, self.board.jobs.get(job.id), now, self.previews.get(job.id))

    @classmethod
    def build(cls, cluster: ClusterConfig, queue: JobQueue, password: str) -> Web:
        """The page's state; its key and poster cache live beside the coordinator's database."""
        return cls(queue, cls.new_auth(cluster, password),
                   OutputFiles(output_roots(cluster), _state(cluster) / "posters"), cluster.web.upload_mib << 20)

    @staticmethod
    def new_auth(cluster: ClusterConfig, password: str) -> Auth:
        """Login for `password`, its sessions signed with the key kept beside the database."""
        return Auth(password, _state(cluster) / "session.key", cluster.web.session_hours)


def _state(cluster: ClusterConfig) -> Path:
    return Path(cluster.coordinator.database).expanduser().parent / "web"


_templates = jinja2.Environment(loader=jinja2.PackageLoader("artifex_agent.web", "templates"),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True)


# A page's render gives the event loop back at least this often: the scheduler shares the loop, and a
# queue page of 100 rows took 2 ms in one piece, which a Submit arriving meanwhile waited out (bench.web).
RENDER_SLICE_S = 0.0005


def render(request: Request, web: Web, session: Session | None, name: str, status: int = 200,
           **context: Any) -> Response:
    context.update(request=request, csrf=web.auth.csrf_token(session) if session else "", csrf_field=CSRF_FIELD,
                   logged_in=session is not None and web.auth.enabled,
                   message=request.query_params.get("msg", "")[:300])  # what an action just did
    template = _templates.get_template(name)
    return StreamingResponse(_in_slices(template.generate(context), web.urgency), status_code=status,
                             media_type="text/html; charset=utf-8", headers=_HEADERS)


async def _in_slices(pieces: Iterator[str], urgency: Urgency) -> AsyncIterator[bytes]:
    """The template's output a slice at a time; before each slice, scheduling work in flight goes first."""
    out: list[str] = []
    waiting = await urgency.calm()  # False: the scheduler is stuck on something; render on, slice by slice
    until = time.perf_counter() + RENDER_SLICE_S
    for piece in pieces:
        out.append(piece)
        if time.perf_counter() >= until:
            yield "".join(out).encode()
            out.clear()
            await asyncio.sleep(0)  # a send need not suspend: yield to the loop explicitly
            waiting = waiting and await urgency.calm()
            until = time.perf_counter() + RENDER_SLICE_S
    yield "".join(out).encode()


def local_path(target: str, default: str) -> str:
    """A redirect target only when it is a path on this site ("/jobs/x"), never "//evil" or "https://"."""
    # Browsers drop tabs and newlines in URLs and read "\\" as "/": "/\t/evil" would be "//evil".
    if any(ord(c) < 33 or c == "\\" for c in target) or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def see_other(target: str, msg: str = "") -> RedirectResponse:
    if msg:
        target += ("&" if "?" in target else "?") + "msg=" + quote(msg)
    return RedirectResponse(target, status_code=303, headers=_HEADERS)


def guarded(handler: Handler, *, changes: bool = False, page: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """The login check (pages go to /login, the rest get 401) and, for requests that change state, CSRF."""

    async def endpoint(request: Request) -> Response:
        web: Web = request.app.state.web
        if not web.auth.enabled and request.url.hostname not in _LOCAL_HOSTS:
            # No password on loopback: refuse other Host names, so a DNS-rebinding page cannot drive it.
            return PlainTextResponse("unknown host", status_code=400, headers=_HEADERS)
        session = web.auth.session(request.cookies.get(COOKIE))
        if session is None:
            if page and request.method == "GET":
                return see_other("/login?next=" + quote(request.url.path + ("?" + request.url.query
                                                                             if request.url.query else "")))
            return PlainTextResponse("log in first", status_code=401, headers=_HEADERS)
        if changes:
            too_big = _too_big(request, web)
            if too_big is not None:
                return too_big
            token = request.headers.get(CSRF_HEADER)
            if token is None:
                token = str((await request.form(max_part_size=web.upload_limit)).get(CSRF_FIELD) or "")
            if not web.auth.csrf_ok(session, token):
                return PlainTextResponse("missing or wrong CSRF token: reload the page and try again",
                                         status_code=403, headers=_HEADERS)
        return await handler(request, web, session)

    return endpoint


def _too_big(request: Request, web: Web) -> Response | None:
    """A body over the upload limit (plus room for the form's fields) is refused before it is read."""
    length = request.headers.get("content-length")
    if length is None and "transfer-encoding" not in request.headers:
        return None  # no body
    if length is None or not length.isdigit() or int(length) > web.upload_limit + (1 << 20):
        return PlainTextResponse(f"request too large or without a length: the limit is {web.upload_limit >> 20} MiB",
                                 status_code=413, headers=_HEADERS)
    return None


# ---------------------------------------------------------------------- login

async def login_page(request: Request) -> Response:
    web: Web = request.app.state.web
    return render(request, web, None, "login.html", next=local_path(request.query_params.get("next", "/"), "/"),
                  error="", open=not web.auth.enabled)


async def login(request: Request) -> Response:
    web: Web = request.app.state.web
    form = await request.form(max_part_size=4096)
    target = local_path(str(form.get("next") or "/"), "/")
    if not web.auth.password_ok(str(form.get("password") or "")):
        await asyncio.sleep(0.2)  # a guesser gets five tries a second per connection
        return render(request, web, None, "login.html", status=401, next=target, error="wrong password",
                      open=not web.auth.enabled)
    response = see_other(target)
    response.set_cookie(COOKIE, web.auth.new_session(), max_age=web.auth.session_s, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


async def logout(request: Request, web: Web, session: Session) -> Response:
    response = see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok", headers=_HEADERS)


# ---------------------------------------------------------------------- queue and events

def _states(request: Request) -> list[str]:
    wanted = request.query_params.get("state", "")
    return [wanted] if wanted in JOB_STATES else []


async def _rows(web: Web, states: list[str]) -> list[dict[str, Any]]:
    await web.urgency.calm()
    rows, _ = await web.queue.page(states, QUEUE_PAGE)
    now = time.time()
    return [web.view(job, now) for _, job in rows]


async def queue_page(request: Request, web: Web, session: Session) -> Response:
    states = _states(request)
    return render(request, web, session, "queue.html", jobs=await _rows(web, states),
                  state=states[0] if states else "", states=JOB_STATES, nav="queue")


async def events_stream(request: Request, web: Web, session: Session) -> Response:
    job_id = request.query_params.get("job", "")
    states = _states(request)
    agents_only = bool(request.query_params.get("agents"))  # the agents page: cards, no job events

    async def snapshot() -> Any:
        if agents_only:
            return []
        if job_id:
            job = await web.queue.get(job_id)
            return [web.view(job)]
        return await _rows(web, states)

    def cards() -> Any:
        return agents_view(web.queue.agents, web.queue.scheduler)

    if job_id:
        await web.queue.get(job_id)  # NotFoundError: 404 before the stream starts
    body = events.stream(web.queue.scheduler, web.board, job_id, web.stopping, snapshot,
                         cards if agents_only else None)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={**_HEADERS, "cache-control": "no-cache", "x-accel-buffering": "no"})


# ---------------------------------------------------------------------- submit

def _submit_context(web: Web, form: forms.SubmitForm) -> dict[str, Any]:
    models = video_models(web.queue.agents)
    for m in models:
        m["sizes"] = forms.sizes_for(SizeRules(m["spatial"], m["temporal"], m["max_positions"]))
    if form.values.get("model") and form.values["model"] not in {m["name"] for m in models}:
        models.append({"name": form.values["model"], "kind": "?", "sizes": forms.sizes_for(WAN_SIZE_RULES)})
    sizes = sorted({s for m in models for s in m["sizes"]}, key=lambda s: -int(s.split("x")[0]))
    return {"form": form, "models": models, "sizes": sizes or forms.sizes_for(WAN_SIZE_RULES),
            "choices": forms.CHOICES, "upload_mib": web.upload_limit >> 20, "nav": "submit"}


async def submit_page(request: Request, web: Web, session: Session) -> Response:
    source = request.query_params.get("from", "")
    spec = (await web.queue.get(source)).spec if source else None
    models = video_models(web.queue.agents)
    values = forms.defaults(spec, models[0]["name"] if models else "")
    if spec is not None and values["size"] not in {s for m in models for s in forms.sizes_for(
            SizeRules(m["spatial"], m["temporal"], m["max_positions"]))}:
        values["size"] = "custom"
    return render(request, web, session, "submit.html", **_submit_context(web, forms.SubmitForm(values)))


async def submit(request: Request, web: Web, session: Session) -> Response:
    data = await request.form(max_part_size=web.upload_limit)
    values = {name: str(data.get(name) or "") for name in forms.FIELDS if name != "image"}
    upload = data.get("image")
    image = await upload.read(web.upload_limit + 1) if upload is not None and not isinstance(upload, str) else b""
    form, spec = forms.parse(values, image, web.upload_limit)
    if spec is not None:
        try:
            job, _ = await web.queue.submit(spec)
            return see_other(f"/jobs/{job.id}")
        except JobProblems as exc:
            for problem in exc.problems:
                form.add(problem)
        except ArtifexError as exc:
            form.add(str(exc))
    return render(request, web, session, "submit.html", status=400, **_submit_context(web, form))


# ---------------------------------------------------------------------- one job

async def job_page(request: Request, web: Web, session: Session) -> Response:
    job = await web.queue.get(request.path_params["job_id"])
    history = await web.queue.scheduler.history(job.id)
    served = await asyncio.to_thread(lambda: [web.files.confined(p) is not None for p in job.outputs])
    outputs = [{"index": i, "name": Path(p).name, "served": ok}
               for i, (p, ok) in enumerate(zip(job.outputs, served, strict=True))]
    return render(request, web, session, "job.html", job=web.view(job), spec=job.spec,
                  events=history, stages=web.board.stage_times(job, history), outputs=outputs, nav="")


def _job_action(action: Callable[[Web, str, Any], Awaitable[Job]]) -> Handler:
    async def handler(request: Request, web: Web, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        form = await request.form(max_part_size=4096)
        target = local_path(str(form.get("next") or ""), f"/jobs/{quote(job_id)}")
        try:
            job = await action(web, job_id, form)
        except NotFoundError:
            raise
        except ArtifexError as exc:
            return see_other(target, str(exc))
        return see_other(target, f"job {job.id}: {job.state}")
    return handler


async def _priority(web: Web, job_id: str, form: Any) -> Job:
    text = str(form.get("priority") or "")
    try:
        priority = int(text)
    except ValueError:
        raise RequestError(f"priority must be a whole number; got {text[:20]!r}") from None
    return await web.queue.set_priority(job_id, priority)


async def _output(web: Web, request: Request) -> Path:
    job = await web.queue.get(request.path_params["job_id"])
    n = int(request.path_params["n"])
    path = await asyncio.to_thread(web.files.confined, job.outputs[n]) if 0 <= n < len(job.outputs) else None
    if path is None:
        raise NotFoundError(f"job {job.id} has no output {n} this page may serve")
    return path


async def video(request: Request, web: Web, session: Session) -> Response:
    path = await _output(web, request)
    kind = "video/webm" if path.suffix == ".webm" else "video/mp4"
    download = request.query_params.get("download") == "1"
    # FileResponse answers Range requests with 206 (seeking in the player), and If-Range.
    return FileResponse(path, media_type=kind, headers=_HEADERS, filename=path.name if download else None,
                        content_disposition_type="attachment" if download else "inline")


async def preview(request: Request, web: Web, session: Session) -> Response:
    """A running job's newest live preview, from the coordinator's memory (404 once the job ended)."""
    job_id = request.path_params["job_id"]
    newest = web.previews.get(job_id)
    if newest is None:
        await web.queue.get(job_id)  # NotFoundError names an unknown job
        raise NotFoundError(f"job {job_id} has no live preview now")
    # `?v=` changes with every new preview: the same URL is the same picture, but only for this session.
    # Only picture types: what an agent calls its preview is never served as a page (nosniff holds it there).
    kind = newest.mime if newest.mime in PREVIEW_TYPES else "application/octet-stream"
    return Response(newest.data, media_type=kind,
                    headers={**_HEADERS, "cache-control": "private, max-age=3600"})


async def poster(request: Request, web: Web, session: Session) -> Response:
    path = await _output(web, request)
    jpeg = await asyncio.to_thread(web.files.poster, path)
    if jpeg is None:
        raise NotFoundError("no frame to show")
    return FileResponse(jpeg, media_type="image/jpeg", headers={**_HEADERS, "cache-control": "private, max-age=86400"})


# ---------------------------------------------------------------------- agents, gallery

async def agents_page(request: Request, web: Web, session: Session) -> Response:
    return render(request, web, session, "agents.html", agents=agents_view(web.queue.agents, web.queue.scheduler),
                  nav="agents")


async def gallery_page(request: Request, web: Web, session: Session) -> Response:
    try:
        number = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        number = 1
    before, more = 0, False
    rows: list[tuple[int, Job]] = []
    for _ in range(number):  # pages are cursors in the store (stable while jobs finish): walk to the Nth
        rows, more = await web.queue.page(["done"], GALLERY_PAGE, before)
        if not rows:
            break
        before = rows[-1][0]

    def served() -> list[dict[str, Any]]:  # stat calls: off the loop (outputs may be on a share)
        return [{"job": job_view(job), "outputs": [i for i, p in enumerate(job.outputs)
                                                   if web.files.confined(p) is not None]} for _, job in rows]

    items = await asyncio.to_thread(served)
    return render(request, web, session, "gallery.html", items=items, page=number, more=more, nav="gallery")


# ---------------------------------------------------------------------- the app

async def not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc) if isinstance(exc, NotFoundError) else "not found", status_code=404,
                             headers=_HEADERS)


async def bad_request(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=400, headers=_HEADERS)


def create_app(web: Web) -> Starlette:
    """The Starlette app serving `web`'s pages."""
    routes = [
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(logout, changes=True), methods=["POST"]),
        Route("/", guarded(queue_page)),
        Route("/events", guarded(events_stream, page=False)),
        Route("/submit", guarded(submit_page), methods=["GET"]),
        Route("/submit", guarded(submit, changes=True), methods=["POST"]),
        Route("/jobs/{job_id}", guarded(job_page)),
        Route("/jobs/{job_id}/cancel", guarded(_job_action(lambda w, j, f: w.queue.cancel(j)), changes=True),
              methods=["POST"]),
        Route("/jobs/{job_id}/retry", guarded(_job_action(lambda w, j, f: w.queue.retry(j)), changes=True),
              methods=["POST"]),
        Route("/jobs/{job_id}/priority", guarded(_job_action(_priority), changes=True), methods=["POST"]),
        Route("/jobs/{job_id}/video/{n:int}", guarded(video, page=False)),
        Route("/jobs/{job_id}/poster/{n:int}.jpg", guarded(poster, page=False)),
        Route("/jobs/{job_id}/preview", guarded(preview, page=False)),
        Route("/agents", guarded(agents_page)),
        Route("/gallery", guarded(gallery_page)),
        Mount("/static", StaticFiles(packages=[("artifex_agent.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={NotFoundError: not_found, 404: not_found,
                                                       ArtifexError: bad_request},
                    middleware=[Middleware(SchedulingFirst, urgency=web.urgency)])
    app.state.web = web
    return app


class SchedulingFirst:
    """Outermost: a request waits for scheduling work in flight before any routing, login check or page work."""

    def __init__(self, app: ASGIApp, urgency: Urgency) -> None:
        self.app = app
        self.urgency = urgency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.urgency.calm()
        await self.app(scope, receive, send)
