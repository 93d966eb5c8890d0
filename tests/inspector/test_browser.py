"""The inspector in a real browser: Playwright driving the system's Chromium against a
real gRPC server on the tiny world.

Chromium comes from the distribution (``apt-get install chromium``); CI installs it and
sets ``AUDIOREC_REQUIRE_BROWSER=1``, so that a missing browser fails there instead of
skipping. ``AUDIOREC_SCREENSHOTS=DIR`` also writes each page's screenshot into DIR (the
README's pictures come from there).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from inspector_helpers import start_inspector

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _chromium() -> str | None:
    return os.environ.get("AUDIOREC_CHROMIUM") or next(
        (p for p in map(shutil.which, BROWSERS) if p), None
    )


@pytest.fixture(scope="module")
def page():
    executable = _chromium()
    if executable is None:
        if os.environ.get("AUDIOREC_REQUIRE_BROWSER"):
            pytest.fail("no Chromium on PATH (apt-get install chromium)")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    out = os.environ.get("AUDIOREC_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"inspector-{name}.png"))


def test_listener_title_and_model_pages(page, ui, users, tiny_pipeline, tmp_path):
    page.goto(ui.url)
    page.fill("input[name=id][aria-label='listener id']", users["warm"])
    page.click("form[action='/listener'] button")
    page.wait_for_selector("#recommendations")
    assert page.inner_text("#user") == users["warm"]
    rows = page.locator("#recommendations table.recs tbody tr")
    assert rows.count() >= 20  # ten per item type
    assert page.locator("#recommendations .because a").count() >= 1
    assert "PERSONALIZED" in page.inner_text("#recommendations")
    assert page.locator("#history tbody tr").count() >= 1
    shot(page, tmp_path, "listener")

    title = page.locator("#recommendations table.recs tbody tr a").first.inner_text()
    page.locator("#recommendations table.recs tbody tr a").first.click()
    page.wait_for_selector("#similar")
    assert page.inner_text("#title") == title
    assert page.locator("#similar table.recs tbody tr a").count() >= 10
    shot(page, tmp_path, "title")

    page.click("nav a[href='/model']")
    page.wait_for_selector("#charts")
    assert tiny_pipeline[1].version in page.inner_text("main")
    images = page.locator("#charts img")
    assert images.count() >= 1
    loaded = images.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert loaded and all(loaded)
    shot(page, tmp_path, "model")


def test_bad_ids_and_a_stopped_server_are_messages(page, ui, tiny_pipeline, free_port):
    for bad, expected in (
        ("", "enter a listener id"),
        ("u" * 300, "at most 256 characters"),
        ("u" * 5000, "the address is too long"),
    ):
        page.goto(ui.url + f"listener?id={bad}")
        message = page.inner_text("#message")
        assert expected in message and len(message) < 120
    page.goto(ui.url + "title?id=%3Cb%3Enot-bold%3C/b%3E")
    assert "<b>not-bold</b>" in page.inner_text("#message")  # shown as text, not markup
    running, features = start_inspector(tiny_pipeline[0], f"127.0.0.1:{free_port}")
    try:
        page.goto(running.url + "model")
        assert "does not answer" in page.inner_text("#message")
    finally:
        running.stop()
        features.close()
