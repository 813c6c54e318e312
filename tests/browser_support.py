"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

``scripts/test`` installs both packages. Chromium runs with a fresh profile and
without background networking: this machine has no network beyond loopback.
"""

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import Any, TypeVar

import trio
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium session (closed on exit)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            raise RuntimeError(
                f"{path} is missing: scripts/test installs Debian's chromium and chromium-driver"
            )
    with tempfile.TemporaryDirectory(prefix="hlbook-chromium-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


class Browser:
    """A Chromium session driven from Trio: each WebDriver call runs in a worker thread, so
    the server and simulator in the same Trio run keep going while the browser works."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread (any blocking Selenium call)."""
        return await trio.to_thread.run_sync(lambda: function(*args))

    async def js(self, script: str, *args: Any) -> Any:
        """The value of ``script`` (a function body: ``return …``) run in the page."""
        return await self.call(self.driver.execute_script, script, *args)

    async def until(self, script: str, *args: Any, limit: float = 30.0, what: str = "") -> Any:
        """Poll ``script`` until it returns something truthy; return that value."""
        value = None
        with trio.move_on_after(limit):
            while not (value := await self.js(script, *args)):
                await trio.sleep(0.05)
            return value
        raise AssertionError(f"the page never got there: {what or script} (last: {value!r})")


@asynccontextmanager
async def open_browser() -> AsyncIterator[Browser]:
    """A headless Chromium session for a Trio test (closed on exit)."""
    with ExitStack() as stack:
        driver = await trio.to_thread.run_sync(stack.enter_context, chromium())
        try:
            yield Browser(driver)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stack.close)
