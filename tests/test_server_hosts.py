"""The server answers only for the hosts it serves under, whatever the Origin says (DNS rebinding),
and serves component resources of already imported modules only."""
from __future__ import annotations

import http.client
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from lensframe.server.hosts import host_name, served_hosts
from lensframe.server.process import serve_process
from tests.conftest import tiny_spec
from tests.test_browser import START_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent


def request(url: str, path: str, host: str, headers: dict | None = None) -> tuple[int, str]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        res = conn.getresponse()
        return res.status, res.read().decode(errors="replace")
    finally:
        conn.close()


def websocket_handshake(url: str, host: str, origin: str) -> int:
    """The status of a websocket upgrade of /ws naming `host` and `origin` (101 would be accepted)."""
    return request(url, "/ws", host, {"Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket",
                                      "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})[0]


@pytest.fixture(scope="module")
def spec(tiny_models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "spec.yaml"
    path.write_text(tiny_spec(tiny_models["gpt2"], "  lens: {type: logit_lens}\n"))
    return path


def test_host_names():
    assert host_name("127.0.0.1:5006") == "127.0.0.1" and host_name("[::1]:5006") == "[::1]"
    assert host_name("Evil.Example:80") == "evil.example" and host_name("::1") == "::1"
    assert served_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1", "[::1]"}
    assert "lab.example" in served_hosts("127.0.0.1", ["lab.example:443"])
    assert socket.gethostname().lower() in served_hosts("0.0.0.0")


def test_a_rebinding_request_is_refused_on_loopback(spec, tmp_path):
    with serve_process(spec, "--cache-dir", str(tmp_path / "store"), "--allow-host", "lab.example",
                       log_path=tmp_path / "serve.log", cwd=ROOT, wait_s=START_TIMEOUT_S) as server:
        port = urlparse(server.url).port
        assert request(server.url, "/", f"127.0.0.1:{port}")[0] == 200
        assert request(server.url, "/", f"localhost:{port}")[0] == 200
        assert request(server.url, "/", f"lab.example:{port}")[0] == 200  # --allow-host
        status, body = request(server.url, "/", f"evil.example:{port}")
        assert status == 403 and "does not answer for the host 'evil.example" in body
        # the rebinding shape: Host and Origin both the attacker's name (Bokeh alone let it through)
        assert websocket_handshake(server.url, f"evil.example:{port}", f"http://evil.example:{port}") == 403
        # a module named in a component URL is not imported (Panel would import any installed one)
        status, _ = request(server.url, "/components/this/X/_css/x.css", f"127.0.0.1:{port}")
        assert status == 404
        log = server.log()
    assert "The Zen of Python" not in log and "Traceback" not in log


def test_all_interfaces_answer_this_machine_only_and_warn_without_a_login(spec, tmp_path):
    with serve_process(spec, "--cache-dir", str(tmp_path / "store"), "--address", "0.0.0.0",
                       log_path=tmp_path / "serve.log", cwd=ROOT, wait_s=START_TIMEOUT_S) as server:
        port = urlparse(server.url).port
        assert request(server.url, "/", f"127.0.0.1:{port}")[0] == 200
        assert request(server.url, "/", f"{socket.gethostname()}:{port}")[0] == 200
        assert request(server.url, "/", f"evil.example:{port}")[0] == 403
        assert websocket_handshake(server.url, f"evil.example:{port}", f"http://evil.example:{port}") == 403
        log = server.log()
    assert "warning: serving on 0.0.0.0 without authentication: anyone who can reach this machine" in log


def test_basic_auth_is_required_when_set(spec, tmp_path, monkeypatch):
    """--basic-auth (here from LENSFRAME_BASIC_AUTH, which `ps` does not show): no page without a
    login; a wrong password is refused; the right one gets a signed cookie and the dashboard."""
    from urllib.parse import urlencode

    monkeypatch.setenv("LENSFRAME_BASIC_AUTH", "s3cret-pass")
    with serve_process(spec, "--cache-dir", str(tmp_path / "store"), log_path=tmp_path / "serve.log", cwd=ROOT) as server:
        import time

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # answering: the login redirect
            try:
                status, _ = request(server.url, "/", "127.0.0.1")
                break
            except OSError:
                assert time.monotonic() < deadline and server.proc.poll() is None, server.log()
                time.sleep(0.3)
        u = urlparse(server.url)
        host = f"127.0.0.1:{u.port}"

        def get(path, cookie=""):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("GET", path, headers={"Host": host, **({"Cookie": cookie} if cookie else {})})
            res = conn.getresponse()
            res.read()
            return res

        def login(password):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("POST", "/login", body=urlencode({"username": "ana", "password": password}),
                         headers={"Host": host, "Content-Type": "application/x-www-form-urlencoded"})
            res = conn.getresponse()
            res.read()
            return res

        first = get("/")
        assert first.status in (302, 303) and "login" in first.getheader("Location", "")
        def cookies(res) -> dict:
            return dict(c.split(";", 1)[0].split("=", 1) for c in res.msg.get_all("Set-Cookie") or [])

        assert "user" not in cookies(login("wrong"))
        signed = cookies(login("s3cret-pass"))
        assert signed.get("user")
        assert get("/", f"user={signed['user']}").status == 200
        log = server.log()
    assert "s3cret-pass" not in log and "warning: serving on" not in log  # loopback: no warning


def test_an_error_card_keeps_the_traceback_in_the_log_when_others_can_reach_the_server(capsys):
    from lensframe.server import app

    class Broken:
        id = "lens"

        def render(self, ctx):
            raise ValueError("bad numbers")

    def card() -> str:
        return app.render_view(Broken(), None).object

    shown = card()
    assert "bad numbers" in shown and "Traceback" in shown  # loopback (the default): the operator's own page
    app.SHOW_TRACEBACKS["value"] = False
    try:
        short = card()
    finally:
        app.SHOW_TRACEBACKS["value"] = True
    error_id = short.split("error id ", 1)[1][:8]
    assert "bad numbers" in short and "Traceback" not in short
    log = capsys.readouterr()
    assert f"error {error_id} in view 'lens':" in log.out + log.err and "ValueError: bad numbers" in log.out + log.err
