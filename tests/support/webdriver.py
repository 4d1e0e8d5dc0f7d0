"""A minimal W3C WebDriver client (chromedriver + headless Chromium) over urllib: no selenium.

Tests drive the MLflow UI as a user does: open a page, click a link, read what is shown. Each
browser gets a fresh ``--user-data-dir`` (no local storage from an earlier visit) and the flags
that keep Chromium quiet offline.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def available() -> str | None:
    """None when chromium and chromedriver are installed, else why not (a skip reason)."""
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not Path(path).exists():
            return f"{name} is absent (Debian packages: chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    """chromedriver answered with an error."""


class Browser:
    """One headless Chromium session driven through chromedriver."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.port = free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="c2v-chromium-"))
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    self.close()
                    raise RuntimeError("chromedriver did not start") from None
                time.sleep(0.2)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [*CHROME_FLAGS, f"--user-data-dir={self.profile}"],
                    },
                }
            }
        }
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            raise WebDriverError(str(payload.get("value", payload))[:500]) from None
        value = payload.get("value", payload)
        if isinstance(value, dict) and value.get("error"):
            raise WebDriverError(f"{value['error']}: {value.get('message', '')[:500]}")
        if "sessionId" in payload and path == "/session":
            return {"sessionId": payload["sessionId"], **(value or {})}
        return value

    def _session(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._session("GET", "/url")

    def text(self) -> str:
        """The visible text of the page body."""
        return self.script("return document.body ? document.body.innerText : ''")

    def script(self, source: str, *args: Any) -> Any:
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def find_link(self, text: str) -> str | None:
        """The element id of the first ``<a>`` whose text is exactly ``text``, or None."""
        try:
            found = self._session("POST", "/element", {"using": "link text", "value": text})
        except WebDriverError:
            return None
        return found[ELEMENT]

    def click(self, element: str) -> None:
        self._session("POST", f"/element/{element}/click", {})

    def wait_for(self, predicate: Any, what: str, timeout: float | None = None) -> Any:
        """Poll ``predicate()`` until it returns something truthy; AssertionError naming ``what``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; at {self.url}: {self.text()[:1500]!r}")
            time.sleep(0.5)

    def screenshot(self, path: str | Path) -> Path:
        import base64

        png = base64.b64decode(self._session("GET", "/screenshot"))
        Path(path).write_bytes(png)
        return Path(path)

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._session("DELETE", "")
        except Exception:  # noqa: BLE001 (closing: the driver may already be gone)
            pass
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
