"""The Spaces demo: its search and ID-tree logic, the exported Space folder, and the page in a real headless Chromium
started through `lmindexer space`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import build_tiny_retriever
from test_remote_code import REPO_ROOT

from lmindexer.hub_cards import export_space, push_space, save_for_hub

gradio = pytest.importorskip("gradio", reason="the Spaces demo needs gradio (pip install -e '.[dev]')")

ARTIFACTS = Path(os.environ.get("LMINDEXER_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def published(demo_items, demo_tokenizer, tmp_path_factory):
    """A tiny retriever saved exactly as `push` lays out its Hub repo, and the in-memory model for expectations."""
    model, tokenizer = build_tiny_retriever(demo_items, demo_tokenizer, seed=1)
    model.config.task = "recommendation"
    model.config.history_separator = " | "
    folder = tmp_path_factory.mktemp("space") / "retriever"
    save_for_hub(model, folder, tokenizer=tokenizer, repo_id="org/tiny-retriever")
    return folder, model, tokenizer


def test_search_history_and_id_tree(published, demo_items, monkeypatch, tmp_path):
    from lmindexer.hub_cards.space.app import RetrievalDemo

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder, model, tokenizer = published
    demo = RetrievalDemo(str(folder))
    rows, choices, tree = demo.search("gentle cleanser", [], 5)
    expected = model.retrieve(["gentle cleanser"], tokenizer=tokenizer, top_k=5, num_beams=20)[0]
    assert [row[1] for row in rows] == [hit["doc_id"] for hit in expected]
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5]
    first = expected[0]
    assert rows[0][2] == "".join(f"<id_{p}_{c}>" for p, c in enumerate(first["semantic_id"], start=1))
    assert choices["value"] == first["doc_id"] and len(choices["choices"]) == 5

    history = [demo_items[4]["item_id"], demo_items[9]["item_id"]]
    assert demo.query_text("", history) == f"{demo_items[4]['title']} | {demo_items[9]['title']}"
    by_history, _, _ = demo.search("", history, 3)
    joined = model.retrieve(
        [f"{demo_items[4]['title']} | {demo_items[9]['title']}"], tokenizer=tokenizer, top_k=3, num_beams=20
    )[0]
    assert [row[1] for row in by_history] == [hit["doc_id"] for hit in joined]
    with pytest.raises(gradio.Error, match="Type a query or pick"):
        demo.search("  ", [], 3)

    # The tree: counts by brute force over the map's IDs.
    codes = model.id_map.semantic_ids.tolist()
    doc_codes = model.id_map.semantic_id(first["doc_id"])
    same_first = sum(c[0] == doc_codes[0] for c in codes)
    same_learned = sum(c[:2] == list(doc_codes[:2]) for c in codes)
    assert f"`<id_1_{doc_codes[0]}>`: {same_first} documents" in tree
    assert f"`<id_1_{doc_codes[0]}><id_2_{doc_codes[1]}>`: {same_learned} documents" in tree
    assert f"Documents sharing its learned ID ({same_learned - 1}):" in tree
    assert f"`{doc_codes[0]}`: {same_first} ←" in tree and f"`{doc_codes[1]}`: {same_learned} ←" in tree
    siblings = {c[1] for c in codes if c[0] == doc_codes[0]}
    assert all(f"`{code}`: " in tree for code in siblings)


def test_demo_refuses_an_indexer(tiny_model, tmp_path, monkeypatch):
    from lmindexer.hub_cards.space.app import RetrievalDemo

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    tiny_model.save_pretrained(tmp_path / "indexer")
    with pytest.raises(ValueError, match="holds a LMIndexerForSemanticID, not a retriever"):
        RetrievalDemo(str(tmp_path / "indexer"))


def test_exported_space_and_its_push(fake_hub, tmp_path):
    from huggingface_hub import SpaceCard

    written = export_space("org/tiny-retriever", tmp_path / "space", revision="abc123")
    assert written == ["README.md", "app.py", "requirements.txt", "space_config.json"]
    card = SpaceCard.load(tmp_path / "space" / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["org/tiny-retriever"]
    assert card.data.sdk_version == gradio.__version__
    assert json.loads((tmp_path / "space" / "space_config.json").read_text()) == {
        "model": "org/tiny-retriever",
        "revision": "abc123",
    }
    requirements = (tmp_path / "space" / "requirements.txt").read_text()
    assert "transformers>=5.0,<6" in requirements and "lmindexer" not in requirements  # the model brings its code

    push_space("org/tiny-retriever", "org/tiny-demo", revision="abc123", token="hf_space")
    assert fake_hub.repos == [
        {
            "repo_id": "org/tiny-demo",
            "private": None,
            "exist_ok": True,
            "repo_type": "space",
            "space_sdk": "gradio",
            "token": "hf_space",
        }
    ]
    assert fake_hub.commits[0]["repo_type"] == "space"
    assert sorted(fake_hub.commits[0]["paths"]) == written


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`lmindexer space` exited early:\n{process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"`lmindexer space` did not serve {url} within {timeout:.0f} s")


def ranked_in_table(table: str, ranking: list[dict]) -> bool:
    if not all(hit["doc_id"] in table for hit in ranking):
        return False
    positions = [table.index(hit["doc_id"]) for hit in ranking]
    return positions == sorted(positions)


def poll(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return condition()


def test_space_in_a_headless_browser(published, demo_items, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine: install Debian's `chromium` package (.ci/run does)")
    folder, model, tokenizer = published
    expected = model.retrieve(["gentle cleanser"], tokenizer=tokenizer, top_k=10, num_beams=20)[0]
    history_items = [demo_items[4], demo_items[9]]
    history_text = " | ".join(item["title"] for item in history_items)
    by_history = model.retrieve([history_text], tokenizer=tokenizer, top_k=10, num_beams=20)[0]
    # Different rankings, so that the page cannot pass on a stale table.
    assert [hit["doc_id"] for hit in by_history] != [hit["doc_id"] for hit in expected]

    port = free_port()
    env = dict(
        os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules")
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "lmindexer.trainers.cli", "space", "--model", str(folder), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, server)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#query textarea").fill("gentle cleanser")
            page.locator("#search-button").click()
            top_doc = expected[0]["doc_id"]
            page.wait_for_function(
                f"document.querySelector('#results')?.innerText.includes({json.dumps(top_doc)})", timeout=60_000
            )
            table = page.locator("#results").inner_text()
            for hit in expected:
                assert hit["doc_id"] in table and hit["title"] in table
            readable = "".join(f"<id_{p}_{c}>" for p, c in enumerate(expected[0]["semantic_id"], start=1))
            assert readable in table
            page.wait_for_function(
                f"document.querySelector('#id-tree')?.innerText.includes({json.dumps(readable)})", timeout=30_000
            )
            assert "Documents sharing its learned ID" in page.locator("#id-tree").inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "space_demo.png"), full_page=True)

            # Now a user history instead of a query: pick two items by typing their titles into the picker.
            page.locator("#query textarea").fill("")
            picker = page.locator("#history input")
            for item in history_items:
                picker.click()
                picker.fill(item["title"])
                page.wait_for_timeout(300)
                picker.press("Enter")
            page.keyboard.press("Escape")
            for item in history_items:
                assert item["title"] in page.locator("#history").inner_text()
            page.locator("#search-button").click()
            # Ranked as model.retrieve ranks the rendered history; polled until the table has been replaced.
            assert poll(lambda: ranked_in_table(page.locator("#results").inner_text(), by_history), timeout=60), (
                page.locator("#results").inner_text()
            )
            page.screenshot(path=str(ARTIFACTS / "space_demo_history.png"), full_page=True)
            browser.close()
        assert (ARTIFACTS / "space_demo.png").stat().st_size > 10_000
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
