"""tunnelmon's web view in a real headless Chromium, on a live simulation.

Chromium is driven with the DevTools protocol over --remote-debugging-pipe
(JSON messages on fds 3 and 4): no WebDriver, no websocket library, nothing
beyond Debian's `chromium` package.  The screenshot is saved as
$PYTRACE_ARTIFACTS/tunnelmon-web.png (default: the system's temp directory).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import Cli, free_port
from pytrace.tunnelmon.simulate import Simulation
from pytrace.tunnelmon.web import STATIC

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (scripts/setup.sh installs it)"),
    pytest.mark.skipif(not (STATIC / "vendor" / "d3.min.js").exists(),
                       reason="web bundle not built (python3 build_web.py)"),
]


class Browser:
    """Headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:        # in the child: the pipe ends on fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-sync", "--mute-audio", f"--user-data-dir={profile}",
             "--window-size=1400,900", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []
        self.session = None
        target = self.call("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True,
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _read(self, deadline: float) -> dict | None:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise AssertionError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = True, timeout: float = 15, **params):
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise AssertionError(f"no DevTools answer to {method}")
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (ev := self._read(deadline)) is not None:
            if "method" in ev:
                self.events.append(ev)

    def js(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_js(self, expr: str, timeout: float = 10):
        end = time.monotonic() + timeout
        while True:
            value = self.js(expr)
            if value or time.monotonic() > end:
                return value
            self.pump(0.1)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args"))[:300])
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        return out

    def requests(self) -> list[str]:
        return [ev["params"]["request"]["url"] for ev in self.events
                if ev["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False, timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def browser():
    with tempfile.TemporaryDirectory(prefix="pt-tm-chromium-") as profile:
        b = Browser(profile)
        try:
            yield b
        finally:
            b.close()


def test_chord_view_in_chromium(browser):
    """3 hosts, 2 VNIs; the monitor on h0 serves the page.  Host h2 talks only
    in VNI 200, so the VNI selector changes which arcs and ribbons exist."""
    with Simulation(hosts=3, clients=2, vnis=(100, 200), name=f"pt-tmw{os.getpid()}") as sim:
        h0, h1, h2 = sim.hosts
        port = free_port()
        cli = Cli("tunnelmon", "--netns", h0.netns, "--dev", "eth0", "--web", f"127.0.0.1:{port}", "-i", "1",
                  ready=False)
        try:
            assert cli.read_until(lambda line: line.startswith("Web view: http://127.0.0.1:")) is not None
            # VNI 100: h0 <-> h1 only; VNI 200: h0 <-> h1 and h0 <-> h2
            flows = [f for f in sim.plan(rate=100, count=3)
                     if f.src.host == 0 and (f.src.vni == 200 or f.dst.host == 1)]
            results = sim.run(flows)
            assert all(r.sent == r.received == 3 for r in results)

            browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            arcs = "[...document.querySelectorAll('#chord path.arc')].map(e => e.dataset.host).sort()"
            ribbons = ("[...document.querySelectorAll('#chord path.ribbon')]"
                       ".map(e => [e.dataset.source, e.dataset.target].sort().join('|')).sort()")
            assert browser.wait_js(f"{arcs}.length === 3")
            assert browser.js(arcs) == sorted([str(h0.addr), str(h1.addr), str(h2.addr)])
            assert browser.js(ribbons) == sorted([f"{h0.addr}|{h1.addr}", f"{h0.addr}|{h2.addr}"])
            assert browser.js("[...document.getElementById('vni').options].map(o => o.value)") == \
                ["all", "100", "200"]
            # the VNIs in the diagram itself: a ring per host split by VNI, each host's label
            # naming its VNIs, the ribbons' VNIs, a legend; every label inside the picture
            bands = "[...document.querySelectorAll('#chord path.vni')].map(e => e.dataset.host + '/' + e.dataset.vni).sort()"
            labels = ("[...document.querySelectorAll('#chord text.label')]"
                      ".map(e => [e.dataset.host, e.dataset.vnis, e.textContent])")
            ribbon_vnis = ("Object.fromEntries([...document.querySelectorAll('#chord path.ribbon')]"
                           ".map(e => [[e.dataset.source, e.dataset.target].sort().join('|'), e.dataset.vnis]))")
            legend = "[...document.querySelectorAll('#chord g.vni-legend g.entry')].map(e => e.textContent)"
            a0, a1, a2 = str(h0.addr), str(h1.addr), str(h2.addr)
            assert browser.js(bands) == sorted([f"{a0}/100", f"{a0}/200", f"{a1}/100", f"{a1}/200", f"{a2}/200"])
            assert sorted(browser.js(labels)) == sorted([[a0, "100,200", f"{a0}VNI 100, 200"],
                                                         [a1, "100,200", f"{a1}VNI 100, 200"],
                                                         [a2, "200", f"{a2}VNI 200"]])
            assert browser.js(ribbon_vnis) == {"|".join(sorted([a0, a1])): "100,200", "|".join(sorted([a0, a2])): "200"}
            assert browser.js(legend) == ["VNI 100", "VNI 200"]
            inside = ("(() => { const s = document.getElementById('chord').getBoundingClientRect();"
                      " return [...document.querySelectorAll('#chord text')].filter(t => {"
                      " const r = t.getBoundingClientRect(); return r.left < s.left || r.right > s.right"
                      " || r.top < s.top || r.bottom > s.bottom; }).map(t => t.textContent); })()")
            assert browser.js(inside) == []

            # the VNI selector filters: VNI 100 has no h2
            browser.js("(() => { const s = document.getElementById('vni'); s.value = '100';"
                       " s.dispatchEvent(new Event('change')); })()")
            assert browser.wait_js(f"{arcs}.length === 2")
            assert browser.js(arcs) == sorted([str(h0.addr), str(h1.addr)])
            assert browser.js(ribbons) == [f"{h0.addr}|{h1.addr}"]
            assert browser.js(bands) == sorted([f"{h0.addr}/100", f"{h1.addr}/100"])
            assert browser.js(legend) == ["VNI 100"]
            assert sorted(browser.js(labels)) == sorted([[str(h0.addr), "100", f"{h0.addr}VNI 100"],
                                                         [str(h1.addr), "100", f"{h1.addr}VNI 100"]])

            # back to all VNIs; click h2's arc (a real mouse click at its centroid)
            browser.js("(() => { const s = document.getElementById('vni'); s.value = 'all';"
                       " s.dispatchEvent(new Event('change')); })()")
            assert browser.wait_js(f"{arcs}.length === 3")
            point = browser.js(
                f"(() => {{ const el = document.querySelector('#chord path.arc[data-host=\"{h2.addr}\"]');"
                " const pt = el.ownerSVGElement.createSVGPoint(); pt.x = +el.dataset.cx; pt.y = +el.dataset.cy;"
                " const p = pt.matrixTransform(el.getScreenCTM()); return [p.x, p.y]; })()")
            browser.click(*point)
            rows = "[...document.querySelectorAll('#inner tbody tr')].map(r => r.dataset.ip + '/' + r.dataset.vni)"
            assert browser.wait_js(f"{rows}.length > 0")
            behind_h2 = sorted(f"{c.addr}/{c.vni}" for c in sim.clients if c.host == 2 and c.vni == 200)
            assert sorted(browser.js(rows)) == behind_h2
            assert browser.js("document.getElementById('detail-title').textContent") == \
                f"Inner addresses behind {h2.addr}"
            # and h0's breakdown: its clients in both VNIs
            point = browser.js(
                f"(() => {{ const el = document.querySelector('#chord path.arc[data-host=\"{h0.addr}\"]');"
                " const pt = el.ownerSVGElement.createSVGPoint(); pt.x = +el.dataset.cx; pt.y = +el.dataset.cy;"
                " const p = pt.matrixTransform(el.getScreenCTM()); return [p.x, p.y]; })()")
            browser.click(*point)
            assert browser.wait_js(f"{rows}.length === 2")
            assert sorted(browser.js(rows)) == sorted(f"{c.addr}/{c.vni}" for c in sim.clients if c.host == 0)

            # auto-refresh: every second once chosen, then not at all once off
            polls = lambda: len([u for u in browser.requests() if u.endswith("/api/stats")])  # noqa: E731
            browser.js("(() => { const p = document.getElementById('period'); p.value = '1000';"
                       " p.dispatchEvent(new Event('change')); })()")
            before = polls()
            browser.pump(2.5)
            assert polls() >= before + 2
            browser.js("(() => { const a = document.getElementById('auto'); a.checked = false;"
                       " a.dispatchEvent(new Event('change')); })()")
            browser.pump(0.3)
            before = polls()
            browser.pump(2.5)
            assert polls() == before

            shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            out = Path(os.environ.get("PYTRACE_ARTIFACTS", tempfile.gettempdir())) / "tunnelmon-web.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(shot)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000

            assert browser.errors() == []
            # offline: everything came from pytrace itself
            origin = f"http://127.0.0.1:{port}/"
            assert browser.requests() and all(u.startswith(origin) or u.startswith("data:")
                                               for u in browser.requests())
        finally:
            rc, _, err = cli.stop()
        assert rc == 0, err
