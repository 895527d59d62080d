"""Board -> Panel app: title, progress while dataset passes run, the probe box, the grid of view
cards (Page); build_app stacks them in one column, `lensframe serve` puts them in a template
(server/template.py) and, with --watch, follows edits of the spec (server/watch.py).

One Focus per browser session (each session builds its own app around its own Focus); the board,
its store, models and focus-pass memo are shared by all sessions of the process. Before it accepts
sessions the server loads every model and runs one focus pass (warm_up), so the first visitor does
not pay for the load. Several server processes can share one store that `lensframe compute` filled
(read_only_store): they then compute no dataset pass and write nothing (docs/SERVING.md).
"""
from __future__ import annotations

import html
import threading
import time
import os
import secrets
import traceback
import uuid
from urllib.parse import urlencode

import panel as pn

from lensframe.context import NotReady, ViewContext
from lensframe.errors import LensframeError
from lensframe.focus import Focus
from lensframe.views.base import html_pane

from lensframe.focus_url import URL_FIELDS, focus_query, parse_query

from . import timings
from .grid import build_grid
from .probe_bar import build_probe_bar

CSS = """
.lf-title { margin: 4px 8px; }
.lf-card { overflow: hidden; }
.lf-error { color: #8a1c1c; background: #fdecea; border: 1px solid #f5c2c0; border-radius: 4px;
            padding: 8px; font-size: 12px; overflow: auto; max-height: 100%; }
.lf-waiting { color: #555; padding: 8px; }
"""


class ComputeJob:
    """The board's dataset passes, run once per process in a background thread. `after`: a job of
    the board this one replaces (`serve --watch`): it finishes first, since what it stores may be
    what this board needs, and two passes on one model would only wait on each other's lock."""

    def __init__(self, board, after: "ComputeJob | None" = None):
        self.board, self.after = board, after
        self.fraction, self.message = 0.0, "starting"
        self.done, self.error = False, None
        self._thread: threading.Thread | None = None
        self._bar = None

    def start(self) -> "ComputeJob":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lensframe-compute", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if self.after is not None and not self.after.done:
                self.message = "waiting for the previous spec's computation to finish"
                self.after.wait()
            self.after = None  # else each edit's job would keep every earlier board (and its memos) alive
            report = self.board.compute(progress=self._progress)
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            say(f"dataset passes done: {report.computed} result(s) computed and stored, {report.cache_hits} read from "
                f"the store, {report.forward_passes} forward pass(es), {report.seconds:.0f} s")
        except Exception as exc:  # shown in every session's progress area
            self.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            if self._bar is not None:
                self._bar.close()
            self.done = True

    def _progress(self, fraction: float, message: str) -> None:
        """Shared by every session's progress bar, and mirrored to a tqdm bar in the terminal."""
        from tqdm.auto import tqdm

        if self._bar is None or self._bar.desc != message:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=100, desc=message, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        self._bar.n = int(fraction * 100)
        self._bar.refresh()
        self.fraction, self.message = fraction, message

    def wait(self, timeout=None) -> None:
        if self._thread:
            self._thread.join(timeout)


# Whether error cards show the traceback: on a server bound to loopback, the page is the operator's
# own; on one others can reach, a card shows only the error and an id, and the traceback goes to
# the server log under that id (serve() sets this).
SHOW_TRACEBACKS = {"value": True}
# How many focus forwards may wait per model in a served session (serve() sets it; Page).
FOCUS_QUEUE = {"value": 0}
FOCUS_PROCESS = {"value": False}  # serve --focus-process: the forwards in a process per model


def render_view(view, ctx) -> pn.viewable.Viewable:
    """A view's content, or an error card: a failing view never blanks the page."""
    try:
        return view.render(ctx)
    except NotReady:
        return html_pane("<div class='lf-waiting'>waiting for the dataset pass…</div>", sizing_mode="stretch_width")
    except Exception as exc:
        tb = traceback.format_exc()
        error_id = uuid.uuid4().hex[:8]
        say(f"error {error_id} in view {view.id!r}:\n{tb.rstrip()}")
        detail = (f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>"
                  if SHOW_TRACEBACKS["value"] else f"<br><small>error id {error_id}: the server log has the details</small>")
        return html_pane(
            f"<div class='lf-error'><b>{html.escape(view.id)} failed:</b> {html.escape(type(exc).__name__)}: "
            f"{html.escape(str(exc))}{detail}</div>", css_classes=["lf-error-card"], sizing_mode="stretch_both")


def view_card(view, body, note: bool = False):
    """A view's card on the grid, served or exported (note: an exported page's note in its place)."""
    return pn.Card(body, title=view.title, collapsible=False, sizing_mode="stretch_both",
                   css_classes=["lf-card", f"lf-card-{view.id}", f"lf-type-{view.type}"]
                   + (["lf-export-note-card"] if note else []))


class Page:
    """One session's dashboard on one board, in parts: `title`, `progress` (None once the dataset
    passes are done), `probe_bar`, `grid` of view cards. build_app stacks them in a column; the
    served page (server/template.py) puts progress and the probe box in its sidebar. `stop()`
    detaches it (its focus watchers and its progress poll), for a page replaced by a new spec.

    A focus change renders each view that reads it again. A view that builds its components with
    ctx.part returns the same objects with new data, and its card is left as it is: the browser
    gets param patches, no new Bokeh models. A view that returns new objects (a plugin written
    against the plain render contract, an error card) has its card body replaced. in_place=False
    makes every render build new components (the re-create engine, for bench_serving)."""

    def __init__(self, board, focus: Focus, job: ComputeJob | None = None, notices=(), in_place: bool = True,
                 sidebar: bool = False, focus_queue: int = 0, focus_process: bool = False, notes: dict | None = None):
        """notes: {view id: component} for views the page shows as that component instead of
        rendering them (an exported page's note cards: server/export.py); the others' contexts are
        `contexts`, their card bodies `bodies`.
        sidebar: parts for the served template (a stacked probe box, a grid that fills the main area).
        focus_queue: > 0 in a served session: a focus forward runs on the board's worker threads
        (lensframe.focus_worker, at most this many waiting per model) while the event loop serves
        other sessions; 0: on the event loop (notebooks, tests, the old engine in bench_serving).
        focus_process: the workers hand each forward to a process per model (lensframe.focus_process)."""
        self.board, self.focus = board, focus
        self.cards, self.refreshers = {}, []
        self.contexts: dict[str, ViewContext] = {}
        self.bodies: dict[str, pn.Column] = {}
        self._watchers, self._callbacks = [], []
        self.workers = board.executor.focus_workers(focus_queue, focus_process) if focus_queue > 0 else None
        if self.workers is not None and timings.enabled():
            self.workers.observer = timings.record
        self.page_id = uuid.uuid4().hex[:8]
        self.clock = timings.ChangeClock(self.page_id)
        follows: dict[str, set] = {}  # view id -> the focus fields it follows
        # first, so a change is clocked before any view renders it
        self._watchers.append(focus.param.watch(self._clock_change, [f for f in Focus.param if f != "name"]))
        for vid, view in board.views.items():
            if notes and vid in notes:
                self.cards[vid] = view_card(view, pn.Column(notes[vid], sizing_mode="stretch_both",
                                                            css_classes=["lf-view-body"]), note=True)
                continue
            ctx = self.contexts[vid] = ViewContext(board, focus, view, in_place=in_place)
            body = self.bodies[vid] = pn.Column(sizing_mode="stretch_both", css_classes=["lf-view-body"])
            needs = view.needs(board.spec.dataset.max_tokens)
            focus_models = sorted({n.model for n in needs if n.kind == "focus"})

            def refresh(*_, vid=vid, view=view, ctx=ctx, body=body, focus_models=focus_models, wait=True):
                # a focus forward may take a moment: show it rather than stale content; where the
                # results are memoized or kept in the store, skip the spinner (two more patches)
                subject = ctx.subject
                missing = [m for m in focus_models if not board.executor.focus_ready(m, subject)]
                if missing and wait and self.workers is not None:
                    self._await_forward(missing, subject, lambda: ctx.subject, refresh, body)
                    return
                slow = bool(missing)
                if slow:
                    body.loading = True
                try:
                    content = render_view(view, ctx)
                    if len(body.objects) != 1 or body.objects[0] is not content:
                        body.objects = [content]
                finally:
                    if slow or body.loading:  # also a spinner left by a forward a newer focus overtook
                        body.loading = False
                self.clock.done(vid)

            refresh()
            self.refreshers.append(refresh)
            fields = [f for f in view.reads if getattr(view.p.pin, f, None) is None]
            if "text" in fields and getattr(view.p.pin, "sample", None) is not None:
                fields.remove("text")  # pinned to a sample: a probe does not move it
            if fields:
                follows[vid] = set(fields)
                self._watchers.append(focus.param.watch(refresh, fields))
            self.cards[vid] = view_card(view, body)
        self._follows = follows
        self.title = pn.pane.HTML(f"<h2 class='lf-title'>{html.escape(board.title)}</h2>", sizing_mode="stretch_width")
        self.progress = self._progress(job) if job is not None and not job.done else None
        self.probe_bar = build_probe_bar(board, focus, notices, vertical=sidebar)
        self.grid = build_grid(board.spec.layout, self.cards, fill=sidebar)

    def _clock_change(self, *events) -> None:
        if timings.enabled():
            names = {e.name for e in events}
            self.clock.start(sorted(names), [vid for vid, fields in self._follows.items() if fields & names])

    def _await_forward(self, models: list, subject, current, refresh, body) -> None:
        """Ask the worker threads for `subject`'s focus results and render the view when they are in,
        on this session's event loop turn; meanwhile the view shows its spinner and the loop serves
        other sessions; a forward that a newer click overtook (current() is no longer `subject`)
        renders nothing. A full queue shows a busy note and tries again in a second."""
        from lensframe.focus_worker import Busy

        doc = pn.state.curdoc
        try:
            futures = [self.workers.request(m, subject, owner=self.page_id) for m in models]
        except Busy as busy:
            body.loading = False
            body.objects = [html_pane(
                f"<div class='lf-waiting lf-busy'>the server is busy: {busy.waiting} focus passes are waiting for "
                f"{html.escape(busy.model)}; this view follows as soon as one is free</div>", sizing_mode="stretch_width")]
            self._callbacks.append(pn.state.add_periodic_callback(refresh, period=1000, count=1))
            return
        body.loading = True
        self.clock.waiting()

        def arrived(_future) -> None:  # on a worker thread: hand the render to the session's loop
            if all(f.done() for f in futures):
                failed = any(not f.cancelled() and f.exception() is not None for f in futures)
                # a failed forward renders at once, so the view's card shows the error
                in_session(doc, lambda: refresh(wait=not failed) if current() == subject else None)

        for f in futures:
            f.add_done_callback(arrived)

    def _progress(self, job: ComputeJob) -> pn.Column:
        """The dataset passes' progress, polled from the job; every view renders again when they end."""
        bar = pn.indicators.Progress(value=int(job.fraction * 100), max=100, sizing_mode="stretch_width",
                                     css_classes=["lf-progress"])
        note = pn.pane.HTML(f"<div class='lf-progress-text'>{html.escape(job.message)}</div>",
                            sizing_mode="stretch_width")
        progress = pn.Column(note, bar, sizing_mode="stretch_width", css_classes=["lf-progress-box"])

        def poll():
            bar.value = int(job.fraction * 100)
            text = job.error or f"{job.message}: {int(job.fraction * 100)}%"
            note.object = f"<div class='lf-progress-text'>{html.escape(text)}</div>"
            if job.done:
                cb.stop()
                if job.error is None:
                    progress.visible = False
                for r in self.refreshers:
                    r()

        cb = pn.state.add_periodic_callback(poll, period=400)
        self._callbacks.append(cb)
        return progress

    def stop(self) -> None:
        for cb in self._callbacks:
            if cb.running:
                cb.stop()
        for watcher in self._watchers:
            self.focus.param.unwatch(watcher)
        self._callbacks, self._watchers = [], []


def in_session(doc, fn) -> None:
    """Run fn on `doc`'s event loop turn, as Panel runs a session's callbacks (its curdoc set); from
    any thread. A session closed meanwhile is skipped."""
    if doc is None:  # not in a served session: nothing else runs on a loop, so run it now
        fn()
        return
    from panel.io.state import set_curdoc

    def run():
        with set_curdoc(doc):
            fn()

    try:
        doc.add_next_tick_callback(run)
    except Exception:  # the session's document is gone
        pass


def build_app(board, focus: Focus | None = None, job: ComputeJob | None = None, notices=(),
              in_place: bool = True) -> pn.Column:
    """The page of one session as one column: title, progress, the probe box, the grid of view
    cards (Page). `notices` are shown in the probe box (e.g. what of the page's address could not be
    applied). For notebooks, tests and bench_serving; `lensframe serve` puts the same parts in a
    template (server/template.py)."""
    focus = focus or board.new_focus()
    page = Page(board, focus, job, notices, in_place=in_place)
    parts = [page.title] + ([page.progress] if page.progress is not None else []) + [page.probe_bar, page.grid]
    address_follows(focus, board.new_focus().values())
    return pn.Column(*parts, sizing_mode="stretch_width", stylesheets=[CSS], css_classes=["lf-app"])


# Query fields of the page that are not the focus: the template's light/dark switch reloads the page
# with ?theme=dark, which must neither be reported as an unknown focus field nor dropped when the
# address follows the focus.
PAGE_FIELDS = ("theme",)


def address_follows(focus: Focus, defaults: dict) -> None:
    """Keep the focus in the page's address (?text=...&layer=...), so a link reopens this view."""
    location = pn.state.location
    if location is None:  # not in a served page (a notebook, a test)
        return
    args = pn.state.session_args or {}
    kept = [(name, _text(args[name][-1])) for name in PAGE_FIELDS if args.get(name)]

    def write(*_):
        query = "&".join(q for q in (focus_query(focus.values(), defaults), urlencode(kept)) if q)
        location.search = f"?{query}" if query else ""

    focus.param.watch(write, list(URL_FIELDS))
    write()


def url_focus(board, focus: Focus) -> list[str]:
    """Apply the session's request query (?text=...&position=...) to its focus; returns what could
    not be applied, for the page to say."""
    args = pn.state.session_args or {}
    pairs = [(name, values[-1]) for name, values in args.items() if values and name not in PAGE_FIELDS]
    fields, problems = parse_query(pairs, board)
    if "text" in fields and "position" not in fields:
        fields["position"] = None
    focus.param.update(**fields)
    return problems


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


STORED_KINDS = ("prepare", "dataset", "derive")  # what `lensframe compute` stores; focus and lookup run live


def require_stored(board) -> None:
    """A read-only server computes nothing: every stored result the plan needs must be there (and
    intact), else one message with the command that fills the store."""
    needed = [p for p in board.plan.nodes.values() if p.node.kind in STORED_KINDS]
    missing = set(board.store.missing([p.key for p in needed]))
    if missing:
        labels = [p.node.label() for p in needed if p.key in missing]
        shown = ", ".join(labels[:4]) + (f", and {len(labels) - 4} more" if len(labels) > 4 else "")
        raise LensframeError(
            f"{board.spec.file}: the store at {board.store.root} lacks {len(missing)} of the {len(needed)} results "
            f"this spec needs ({shown}), and a server with a read-only store computes nothing\n"
            f"    hint: fill the store first: lensframe compute {board.spec.file} --cache-dir {board.store.root}")


def say(line: str) -> None:
    """A line in the terminal that a progress bar running in another thread (the dataset passes)
    does not swallow: tqdm clears its bar, prints the line, and draws the bar again below it."""
    from tqdm.auto import tqdm

    tqdm.write(line)


def warm_up(board, say=say) -> None:
    """Load every model of the spec and run one focus pass (sample 0, the focus a new session starts
    at), saying what it does, so the first visitor gets a loaded model and a warm focus memo."""
    ex = board.executor
    for name, mspec in board.spec.models.items():
        say(f"warm: loading {name} ({mspec.source})")
        t0 = time.perf_counter()
        ex.model(name)
        loaded = time.perf_counter() - t0
        has_tokens = any(p.node.op == "tokens" for p in board.plan.of_kind("prepare", name))
        if not (has_tokens and board.plan.of_kind("focus", name)):
            say(f"warm: {name} loaded in {loaded:.1f}s (no view needs its focus pass)")
            continue
        sample, t1, passes = Focus.param.sample.default, time.perf_counter(), ex.forward_passes
        try:
            ex.focus(name, sample)
        except Exception as exc:  # the views that need it show the error in their cards
            say(f"warm: focus pass on {name} failed: {type(exc).__name__}: {exc}")
            continue
        how = "focus pass" if ex.forward_passes > passes else "focus results read from the store"
        say(f"warm: {name} loaded in {loaded:.1f}s, {how} on sample {sample} in {time.perf_counter() - t1:.1f}s")
        if FOCUS_PROCESS["value"] and FOCUS_QUEUE["value"] > 0:
            try:
                seconds = ex.focus_workers(FOCUS_QUEUE["value"], process=True).warm(name)
                say(f"warm: {name}'s focus process ready in {seconds:.1f}s")
            except Exception as exc:  # its requests fail in the views' cards, and a later one starts it again
                say(f"warm: the focus process of {name} failed: {type(exc).__name__}: {exc}")
    say(f"warm: ready; {ex.forward_passes} forward pass(es) so far in this process")


def _login(address: str, port: int, basic_auth, oauth_provider, cookie_secret) -> dict:
    """pn.serve's options for Panel's own login (basic auth or OAuth, cookies signed with the given
    secret, the environment's, or one made now); none, with a warning when others can reach the port."""
    from .hosts import LOOPBACK

    if basic_auth or oauth_provider:
        secret = cookie_secret or os.environ.get("LENSFRAME_COOKIE_SECRET") or secrets.token_hex(32)
        return {k: v for k, v in {"basic_auth": basic_auth, "oauth_provider": oauth_provider,
                                  "cookie_secret": secret}.items() if v}
    if address not in LOOPBACK:
        say(f"warning: serving on {address or 'every interface'} without authentication: anyone who can reach "
            f"this machine on port {port} can use the dashboard and run the model; add --basic-auth or "
            "--oauth-provider, and TLS in front (docs/SERVING.md)")
    return {}


def serve(board, port: int = 5006, address: str = "127.0.0.1", show: bool = False, read_only_store: bool = False,
          websocket_origins=(), warm: bool = True, open_query=None, watch: bool = False,
          allow_local_views: bool = False, allow_hosts=(), basic_auth: str | None = None,
          oauth_provider: str | None = None, cookie_secret: str | None = None, focus_queue: int = 16,
          focus_process: bool = False, timings_log=None, **kwargs):
    """Serve the board: one page (and Focus) per browser session. With a writable store the dataset
    passes start at once in the background; with read_only_store every stored result must already
    be there (require_stored), and nothing is computed or written but focus passes in memory.
    Models are loaded and warmed before the first session is accepted. watch: rebuild the board
    when its spec file changes, and move every open page to it (server/watch.py). Requests are
    answered only for the hosts it serves under (server/hosts.py: the address, loopback names and
    allow_hosts), against DNS rebinding. focus_queue: see Page (0 runs focus forwards on the event
    loop); focus_process: the forwards in a process per model, not a thread; timings_log: a file that gets each focus change's server-side time (server/timings.py)."""
    from .hosts import LOOPBACK, restrict, served_hosts
    from .template import SessionPage
    from .watch import LiveSpec

    from lensframe.models.sources import transformers_names

    # transformers imported here, before the compute job's thread and the warm-up both load models
    transformers_names("AutoModelForCausalLM", "AutoTokenizer")
    if read_only_store:
        board.store.read_only = True  # a write now raises instead of racing the other servers
        require_stored(board)
        job = None
    else:
        job = ComputeJob(board).start()  # the warm-up below shares the model load with it (a lock)
    # the sessions' engine, set once the store is known to serve (a refused serve leaves it as it was)
    FOCUS_QUEUE["value"], FOCUS_PROCESS["value"] = max(0, int(focus_queue)), bool(focus_process)
    if warm:
        warm_up(board)
    live = LiveSpec(board, job, allow_local_views=allow_local_views, say=say)
    if watch:
        live.watch()

    def session():
        return SessionPage(live).template

    if open_query:  # `serve --open "text=..."`: the page focused on that, in the browser once it serves
        import webbrowser

        url = f"http://{address}:{port}/?{urlencode(open_query)}"
        say(f"opening {url}")
        threading.Timer(1.5, webbrowser.open, [url]).start()
    # Bokeh accepts a websocket only from pages served under these hosts: behind a proxy, its host.
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *websocket_origins,
               *(h if ":" in h else f"{h}:{port}" for h in allow_hosts)]
    SHOW_TRACEBACKS["value"] = address in LOOPBACK  # a page others can reach gets no tracebacks
    if timings_log:
        timings.open_log(timings_log)
    auth = _login(address, port, basic_auth, oauth_provider, cookie_secret)
    server = pn.serve({"/": session}, port=port, address=address, show=show, title=board.title,
                      websocket_origin=origins, print_url=False, verbose=False, start=False, **auth, **kwargs)
    restrict(server._tornado, served_hosts(address, [*websocket_origins, *allow_hosts]))
    say(f"serving on http://{address}:{port}/  (Ctrl-C stops)")  # on its own line, not after a bar
    server.start()
    server.io_loop.start()
    return server
