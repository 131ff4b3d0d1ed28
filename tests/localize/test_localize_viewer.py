"""The detections viewer (localize/viewer.py): the page's data and markup, and the page itself in
headless Chromium.

The browser tests drive Debian's Chromium (``.ci/install_browser.sh`` installs it) over its own
DevTools pipe (``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file
descriptors 3 and 4), so they need no driver package and no free port. They skip when no
Chromium is found, and fail instead when ``TADA_REQUIRE_BROWSER=1`` (CI sets it).

The videos are real H.264 MP4 files written by ``data.mp4.write_mp4``: synthetic-dataset frames
with the frame's index written in binary across the top strip, so that a screenshot tells which
frame the player shows after a seek.
"""

from __future__ import annotations

import base64
import fcntl
import html.parser
import io
import json
import os
import select
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.mp4 import write_mp4
from data.synthetic import Action, Renderer, verb_names
from localize.viewer import (
    MAX_LANES,
    ViewerVideo,
    class_palette,
    embed_json,
    score_slider,
    text_colour,
    video_url,
    viewer_data,
    write_viewer,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("TADA_REQUIRE_BROWSER") == "1"
FPS = 25.0
FRAME_SIZE = 96  # px; the top INDEX_ROWS rows carry the frame index as 8 black/white bars
INDEX_ROWS = 16
VIEWPORT = (1280, 800)


# --------------------------------------------------------------------------------------
# Videos, detections and ground truth


def index_strip_frames(num_frames: int, seed: int) -> list[np.ndarray]:
    """Synthetic-dataset frames (FRAME_SIZE², two actions) whose top strip shows the frame index in
    binary: bar b (of 8, left to right) is white when bit b is set."""
    renderer = Renderer(FRAME_SIZE, 4.0, 2, verb_names(4), np.random.default_rng(seed))
    actions = [Action(0.3, 2.2, 0, 1, 30.0, 55.0, 14.0), Action(1.5, 3.6, 6, 3, 64.0, 60.0, 13.0)]
    bar = FRAME_SIZE // 8
    frames = []
    for i in range(num_frames):
        frame = renderer.frame(i / FPS, actions)
        frame[:INDEX_ROWS] = 0
        for bit in range(8):
            if (i >> bit) & 1:
                frame[:INDEX_ROWS, bit * bar:(bit + 1) * bar] = 255
        frames.append(frame)
    return frames


def decode_strip_index(strip: np.ndarray) -> int:
    """The frame index from an RGB image of the index strip (any size): the centre row of each bar."""
    height, width = strip.shape[:2]
    bits = [int(strip[height // 2, int((b + 0.5) * width / 8)].mean() > 127) << b for b in range(8)]
    return sum(bits)


@pytest.fixture(scope="module")
def video_files(tmp_path_factory) -> dict[str, ViewerVideo]:
    """Three short videos in two folders, one with a space and a '#' in its name."""
    root = tmp_path_factory.mktemp("viewer-videos")
    lengths = {"P01_001": 100, "P01_002": 125, "P02 kitchen #3": 90}  # frames at FPS
    videos = {}
    for seed, (video_id, num_frames) in enumerate(lengths.items()):
        folder = root / ("videos" if seed < 2 else "more videos")
        path = write_mp4(folder / f"{video_id}.mp4", index_strip_frames(num_frames, seed), FPS, keyframe_interval=25)
        videos[video_id] = ViewerVideo(path, num_frames / FPS)
    return videos


DETECTIONS = [
    # scores: one exactly at the slider position the test uses (0.5), to check "at or above"
    {"video_id": "P01_001", "start_sec": 0.3, "end_sec": 2.1, "label": "grow disk", "score": 0.91,
     "verb": "grow", "noun": "disk"},
    {"video_id": "P01_001", "start_sec": 1.52, "end_sec": 3.5, "label": "move-right triangle", "score": 0.5},
    {"video_id": "P01_001", "start_sec": 0.4, "end_sec": 1.9, "label": "shrink disk", "score": 0.22},
    {"video_id": "P01_002", "start_sec": 0.28, "end_sec": 2.3, "label": "grow disk", "score": 0.83},
    {"video_id": "P01_002", "start_sec": 1.37, "end_sec": 3.7, "label": "move-right ring", "score": 0.64},
    {"video_id": "P01_002", "start_sec": 2.9, "end_sec": 4.1, "label": "fade-in square", "score": 0.49},
    {"video_id": "P01_002", "start_sec": 3.1, "end_sec": 3.3, "label": "grow disk", "score": 0.12},
    {"video_id": "P02 kitchen #3", "start_sec": 1.0, "end_sec": 2.0, "label": "</script><b>x</b>", "score": 0.7},
]
GROUND_TRUTH = [
    {"video_id": "P01_001", "start_sec": 0.3, "end_sec": 2.2, "label": "grow disk"},
    {"video_id": "P01_001", "start_sec": 1.5, "end_sec": 3.6, "label": "move-right triangle"},
    {"video_id": "P01_002", "start_sec": 0.3, "end_sec": 2.2, "label": "grow disk"},
    {"video_id": "P01_002", "start_sec": 1.5, "end_sec": 3.6, "label": "move-right ring"},
]


def many_detections(video_id: str, duration_sec: float, count: int, seed: int) -> list[dict]:
    """``count`` random detections of 20 classes, 0.05 to 0.6 s long, overlapping heavily."""
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, duration_sec - 0.5, count)
    lengths = rng.uniform(0.05, 0.6, count)
    return [{"video_id": video_id, "start_sec": float(s), "end_sec": float(min(duration_sec, s + d)),
             "label": f"class {int(c)}", "score": float(p)}
            for s, d, c, p in zip(starts, lengths, rng.integers(0, 20, count), rng.uniform(0, 1, count))]


# --------------------------------------------------------------------------------------
# The page without a browser


class _TagCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_is_one_self_contained_file(tmp_path, video_files):
    page = write_viewer(tmp_path / "out" / "viewer.html", video_files, DETECTIONS, GROUND_TRUTH)
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    parser = _TagCollector()
    parser.feed(text)
    for tag, attrs in parser.tags:  # nothing is loaded from anywhere: no src, href or import
        assert not {"src", "href"} & set(attrs), (tag, attrs)
    assert [tag for tag, _ in parser.tags].count("script") == 2
    assert "@import" not in text and "url(" not in text and "fetch(" not in text
    assert sorted(p.name for p in page.parent.iterdir()) == ["viewer.html"]  # no temporary file left


def test_embedded_data_round_trips_and_a_label_cannot_close_the_script(tmp_path, video_files):
    page = write_viewer(tmp_path / "viewer.html", video_files, DETECTIONS, GROUND_TRUTH)
    text = page.read_text(encoding="utf-8")
    assert text.count("</script>") == 2  # the label "</script>..." did not end the data element
    opening = '<script type="application/json" id="viewer-data">'
    embedded = text[text.index(opening) + len(opening):text.index("</script>")]
    data = json.loads(embedded)
    assert data == viewer_data(tmp_path, video_files, DETECTIONS, GROUND_TRUTH)

    names = [cls["name"] for cls in data["classes"]]
    assert names[0] == "grow disk"  # the most frequent class first (4 records)
    assert "</script><b>x</b>" in names
    by_id = {video["id"]: video for video in data["videos"]}
    assert list(by_id) == list(video_files)
    for video_id, video in by_id.items():
        assert video["duration_sec"] == video_files[video_id].duration_sec
        expected = sorted((d for d in DETECTIONS if d["video_id"] == video_id), key=lambda d: -d["score"])
        assert [(r[0], r[1], names[r[2]], r[3]) for r in video["detections"]] == [
            (d["start_sec"], d["end_sec"], d["label"], d["score"]) for d in expected]
        gt = sorted((g for g in GROUND_TRUTH if g["video_id"] == video_id), key=lambda g: g["start_sec"])
        assert [(r[0], r[1], names[r[2]]) for r in video["ground_truth"]] == [
            (g["start_sec"], g["end_sec"], g["label"]) for g in gt]
    # extra fields travel to the tooltip
    assert by_id["P01_001"]["detections"][0][4] == [["verb", "grow"], ["noun", "disk"]]
    for video_id, video in by_id.items():  # relative to the page, percent-encoded
        assert (tmp_path / urllib.parse.unquote(video["src"])).resolve() == video_files[video_id].path.resolve()
    assert by_id["P02 kitchen #3"]["src"].endswith("/more%20videos/P02%20kitchen%20%233.mp4")
    assert data["has_ground_truth"] is True
    assert viewer_data(tmp_path, video_files, DETECTIONS)["has_ground_truth"] is False


def test_embed_json_escapes_every_angle_bracket():
    value = {"label": "</script><!-- <script>alert(1)</script>", "n": [1.5, -2]}
    text = embed_json(value)
    assert "<" not in text and json.loads(text) == value


def test_video_url_is_relative_and_percent_encoded(tmp_path, monkeypatch):
    page_dir = tmp_path / "run" / "detect"
    assert video_url(tmp_path / "data" / "a b#1?.mp4", page_dir) == "../../data/a%20b%231%3F.mp4"
    assert video_url(page_dir / "clip.mp4", page_dir) == "clip.mp4"

    def no_relative_path(path, start):  # what os.path.relpath does across Windows drives
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", no_relative_path)
    assert video_url(tmp_path / "a b.mp4", page_dir) == (tmp_path / "a b.mp4").resolve().as_uri()


def test_slider_steps_suit_the_range_of_scores():
    assert score_slider([0.2, 0.91, 0.5]) == {"min": 0.0, "max": 0.91, "step": 0.001}
    # EK100 action scores are products of verb and noun probabilities: a few thousandths
    assert score_slider([0.003012, 0.0021, 0.0004]) == {"min": 0.0, "max": 0.003012, "step": 1e-6}
    assert score_slider([-2.5, 3.25]) == {"min": -2.5, "max": 3.25, "step": 0.01}
    assert score_slider([0.30000000000000004]) == {"min": 0.0, "max": 0.3001, "step": 0.0001}  # rounded out
    assert score_slider([]) == {"min": 0.0, "max": 1.0, "step": 0.001}


def test_colours_are_distinct_and_overridable(tmp_path, video_files):
    names = [f"class {i}" for i in range(60)]
    colours = class_palette(names)
    assert len(set(colours.values())) == 60
    rgb = [np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) for c in colours.values()]
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(rgb) for b in rgb[i + 1:])
    assert closest >= 25  # no two of 60 classes look alike (the closest pair: two of matplotlib's tab20)
    assert all(len(c) == 7 and c.startswith("#") for c in colours.values())
    assert text_colour("#ffffff") == "#000000" and text_colour("#1f77b4") == "#ffffff"
    data = viewer_data(tmp_path, video_files, DETECTIONS, class_colours={"grow disk": "rebeccapurple"})
    by_name = {cls["name"]: cls for cls in data["classes"]}
    assert by_name["grow disk"]["colour"] == "rebeccapurple" and by_name["grow disk"]["text_colour"] == "#000000"


@pytest.mark.parametrize("change, message", [
    ({"video_id": "nope"}, "video_id 'nope' is not among"),
    ({"end_sec": 0.1}, "end_sec 0.1 is before start_sec 0.3"),
    ({"score": float("nan")}, "field 'score' is not finite"),
    ({"start_sec": "soon"}, "field 'start_sec' is not a number"),
])
def test_bad_records_are_named(tmp_path, video_files, change, message):
    detections = [dict(DETECTIONS[0], **change)]
    with pytest.raises(ValueError, match="detection 0: " + message):
        write_viewer(tmp_path / "viewer.html", video_files, detections)
    record = dict(DETECTIONS[0])
    del record["score"]
    with pytest.raises(ValueError, match=r"detection 0: missing field\(s\) \['score'\]"):
        write_viewer(tmp_path / "viewer.html", video_files, [record])
    assert not (tmp_path / "viewer.html").exists()


# --------------------------------------------------------------------------------------
# Headless Chromium over the DevTools pipe


class Chromium:
    """One headless Chromium with one page, driven over ``--remote-debugging-pipe``.

    Every command waits for its reply; events that arrive meanwhile are kept in ``events``.
    The network is off three ways: DNS resolves nothing, the proxy is a closed port, and the
    page's network is emulated offline; every request the page makes is still logged.
    """

    def __init__(self, executable: str, profile_dir: Path, viewport: tuple[int, int]):
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # above 10, so that placing them at 3 and 4 in the child cannot clobber one another
        child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
        child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)

        def place_pipe_fds():  # runs in the child before exec; pass_fds keeps 3 and 4 open
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        self.stderr_path = profile_dir / "chromium.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--proxy-server=127.0.0.1:9",
                 f"--user-data-dir={profile_dir / 'profile'}", f"--window-size={viewport[0]},{viewport[1]}",
                 "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                pass_fds=(3, 4), preexec_fn=place_pipe_fds,
            )
        for fd in (to_browser_read, from_browser_write, child_read, child_write):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=None)
        self.session = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                 session=None)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Network.emulateNetworkConditions",
                  {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": viewport[0], "height": viewport[1], "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, session: str | None = "page",
             timeout_sec: float = 30.0) -> dict:
        """Send one command (to the page's session unless ``session=None``) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_sec
        while True:
            reply = self._read(deadline, waiting_for=method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for_event(self, method: str, timeout_sec: float = 30.0) -> dict:
        """The first not yet seen event ``method`` (kept events are searched first)."""
        deadline = time.monotonic() + timeout_sec
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and not event.get("_seen"):
                    event["_seen"] = True
                    return self.events[i]
            self.events.append(self._read(deadline, waiting_for=method))

    def evaluate(self, expression: str, timeout_sec: float = 30.0):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": timeout_sec * 1000},
                           timeout_sec=timeout_sec + 5)
        if "exceptionDetails" in result:
            raise AssertionError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired")

    def click(self, x: float, y: float) -> None:
        """A real left click (press and release) at viewport coordinates (CSS px)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", session=None, timeout_sec=5)
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            os.close(self._to_browser)
            os.close(self._from_browser)

    def _read(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply from Chromium for {waiting_for}; stderr ends:\n{self._stderr_tail()}")
            readable, _, _ = select.select([self._from_browser], [], [], left)
            if readable:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed its pipe (exit {self.process.poll()}); "
                                       f"stderr ends:\n{self._stderr_tail()}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def page_problems(self) -> list[str]:
        """JavaScript exceptions, console errors and browser log errors (CSP refusals among them)."""
        problems = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                problems.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                problems.append(json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                problems.append(params["entry"]["text"])
        return problems

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        reason = (f"Chromium not found at {CHROMIUM}: run .ci/install_browser.sh (as root; it installs Debian's "
                  f"chromium with apt-get) or point $CHROMIUM at a Chromium or Chrome binary")
        if REQUIRE_BROWSER:
            pytest.fail(reason + " (TADA_REQUIRE_BROWSER=1: the browser test must run)")
        pytest.skip(reason)
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium"), VIEWPORT)
    yield chromium
    chromium.close()


def open_viewer(browser: Chromium, page: Path) -> None:
    """Load the page and wait until its script has run and the first video's metadata is in."""
    browser.open(page.as_uri())
    assert browser.evaluate("document.body.dataset.ready") == "true"
    wait_for_metadata(browser)


def wait_for_metadata(browser: Chromium) -> None:
    state = browser.evaluate("""new Promise(resolve => {
        const player = document.getElementById('player');
        const done = () => resolve({ready: player.readyState, error: player.error && player.error.code});
        if (player.readyState >= 1) done();
        else { player.addEventListener('loadedmetadata', done, {once: true});
               player.addEventListener('error', done, {once: true}); }
    })""")
    assert state["error"] is None and state["ready"] >= 1, f"the player cannot load the video: {state}"


def bar_rects(browser: Chromium, selector: str) -> list[dict]:
    """Every bar matching ``selector``: its data attributes, viewport rectangle and whether it shows."""
    return browser.evaluate(f"""[...document.querySelectorAll({json.dumps(selector)})].map(el => {{
        const r = el.getBoundingClientRect();
        return {{start: parseFloat(el.dataset.start), end: parseFloat(el.dataset.end), label: el.dataset.label,
                 score: el.dataset.score === undefined ? null : parseFloat(el.dataset.score),
                 shown: el.getClientRects().length > 0, text: el.textContent, title: el.title,
                 left: r.left, top: r.top, width: r.width, height: r.height}};
    }})""")


def click_element(browser: Chromium, selector: str) -> dict:
    """Scroll the element into view and click its centre with the mouse; returns its rectangle."""
    rect = browser.evaluate(f"""(() => {{
        const el = document.querySelector({json.dumps(selector)});
        el.scrollIntoView({{block: 'center', inline: 'center'}});
        const r = el.getBoundingClientRect();
        const x = r.left + r.width / 2, y = r.top + r.height / 2;
        return {{x, y, left: r.left, top: r.top, width: r.width, height: r.height,
                 hit: document.elementFromPoint(x, y).closest({json.dumps(selector)}) === el}};
    }})()""")
    assert rect["hit"], f"{selector} is covered by another element at its centre"
    browser.click(rect["x"], rect["y"])
    return rect


def set_slider(browser: Chromium, value: float) -> None:
    browser.evaluate(f"""(() => {{ const slider = document.getElementById('score-threshold');
        slider.value = '{value}'; slider.dispatchEvent(new Event('input', {{bubbles: true}})); }})()""")


@pytest.mark.slow
def test_viewer_in_headless_chromium(tmp_path, video_files, browser):
    video_root = video_files["P01_001"].path.parent.parent  # the page beside the videos' folders
    page = write_viewer(video_root / "detect" / "viewer.html", video_files, DETECTIONS, GROUND_TRUTH,
                        title="Detections on three synthetic videos")
    open_viewer(browser, page)

    # the first video is selected; its bars span its whole duration on the timeline
    assert browser.evaluate("document.getElementById('player').getAttribute('src')") == "../videos/P01_001.mp4"
    bars = bar_rects(browser, ".det-bar")
    first = [d for d in DETECTIONS if d["video_id"] == "P01_001"]
    assert sorted((b["start"], b["label"]) for b in bars) == sorted((d["start_sec"], d["label"]) for d in first)
    track = browser.evaluate("(() => { const r = document.getElementById('det-track').getBoundingClientRect();"
                             " return {left: r.left, width: r.width}; })()")
    duration = video_files["P01_001"].duration_sec
    for bar in bars:
        assert bar["left"] - track["left"] == pytest.approx(bar["start"] / duration * track["width"], abs=1.0)
        assert bar["width"] == pytest.approx(max(3.0, (bar["end"] - bar["start"]) / duration * track["width"]),
                                             abs=1.0)
        assert bar["text"] == f"{bar['label']} {bar['score']:.2f}" and bar["label"] in bar["title"]
    assert len(bar_rects(browser, ".gt-bar")) == 2

    # select the second video with the mouse, then click one of its detections
    click_element(browser, '.video-item[data-video-id="P01_002"]')
    wait_for_metadata(browser)
    assert browser.evaluate("document.getElementById('player').getAttribute('src')") == "../videos/P01_002.mp4"
    target = next(d for d in DETECTIONS if d["video_id"] == "P01_002" and d["label"] == "move-right ring")
    browser.evaluate("""(() => { const player = document.getElementById('player');
        window.seekedAt = new Promise(resolve =>
            player.addEventListener('seeked', () => resolve(player.currentTime), {once: true}));
        // the presentation time of the next frame the player puts on screen
        window.presentedAt = new Promise(resolve =>
            player.requestVideoFrameCallback((now, frame) => resolve(frame.mediaTime)));
        return true; })()""")
    click_element(browser, f'.det-bar[data-start="{target["start_sec"]}"]')
    seeked_at = browser.evaluate("window.seekedAt")
    assert abs(seeked_at - target["start_sec"]) <= 1 / FPS
    presented_at = browser.evaluate("window.presentedAt")
    assert abs(presented_at - target["start_sec"]) <= 1 / FPS
    assert target["label"] in browser.evaluate("document.getElementById('selected-bar').textContent")

    # the frame on screen is the one at the detection's start (its index is drawn in the frame)
    content = browser.evaluate("""(() => {  // where the frame is drawn inside the letterboxed element
        const player = document.getElementById('player'); const r = player.getBoundingClientRect();
        const scale = Math.min(r.width / player.videoWidth, r.height / player.videoHeight);
        const w = player.videoWidth * scale, h = player.videoHeight * scale;
        return {left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h};
    })()""")
    strip_height = content["height"] * INDEX_ROWS / FRAME_SIZE
    deadline = time.monotonic() + 10.0
    while True:  # the compositor may show the new frame a moment after the player presents it
        screenshot = browser.screenshot()
        image = np.asarray(Image.open(io.BytesIO(screenshot)).convert("RGB"))
        strip = image[round(content["top"]):round(content["top"] + strip_height),
                      round(content["left"]):round(content["left"] + content["width"])]
        shown_frame = decode_strip_index(strip)
        if abs(shown_frame / FPS - target["start_sec"]) <= 1 / FPS or time.monotonic() > deadline:
            break
        browser.evaluate("new Promise(resolve => setTimeout(resolve, 100))")
    (tmp_path / "viewer.png").write_bytes(screenshot)
    assert image.shape[:2] == (VIEWPORT[1], VIEWPORT[0])
    assert abs(shown_frame / FPS - target["start_sec"]) <= 1 / FPS, (shown_frame, target["start_sec"])

    # every bar in the screenshot has its class colour (sampled inside the left padding, above the text)
    data = viewer_data(page.parent, video_files, DETECTIONS, GROUND_TRUTH)
    colours = {cls["name"]: cls["colour"] for cls in data["classes"]}
    for bar in bar_rects(browser, ".det-bar"):
        x, y = round(bar["left"] + 2), round(bar["top"] + 4)
        expected = np.array([int(colours[bar["label"]][i:i + 2], 16) for i in (1, 3, 5)])
        assert np.abs(image[y, x].astype(int) - expected).max() <= 12, (bar["label"], image[y, x], expected)

    # the slider hides detections below it; the page counts those shown
    second = [d for d in DETECTIONS if d["video_id"] == "P01_002"]
    for threshold in (0.5, 0.83, 0.0, 0.95):
        set_slider(browser, threshold)
        shown = [b for b in bar_rects(browser, ".det-bar") if b["shown"]]
        expected = sorted(d["score"] for d in second if d["score"] >= threshold)
        assert sorted(b["score"] for b in shown) == expected
        assert browser.evaluate("document.getElementById('visible-count').textContent") == (
            f"{len(expected)} of {len(second)} detections shown")

    # a label that looks like markup is text, and a file name with a space and '#' plays
    set_slider(browser, 0.0)
    click_element(browser, '.video-item[data-video-id="P02 kitchen #3"]')
    wait_for_metadata(browser)
    assert [b["text"] for b in bar_rects(browser, ".det-bar")] == ["</script><b>x</b> 0.70"]
    assert browser.evaluate("document.querySelectorAll('#det-track b').length") == 0

    assert browser.page_problems() == []
    assert all(url.startswith(("file:", "data:", "blob:", "about:")) for url in browser.requested_urls()), \
        browser.requested_urls()
    assert any(url.endswith("P01_002.mp4") for url in browser.requested_urls())


def set_max_bars(browser: Chromium, count: int) -> None:
    browser.evaluate(f"""(() => {{ const field = document.getElementById('max-bars');
        field.value = '{count}'; field.dispatchEvent(new Event('input', {{bubbles: true}})); }})()""")


@pytest.mark.slow
def test_a_thousand_detections_stay_usable(tmp_path, video_files, browser):
    duration = video_files["P01_001"].duration_sec
    busy = many_detections("P01_001", duration, 1000, seed=2)
    page = write_viewer(tmp_path / "viewer.html", video_files, busy, max_bars=200)
    started = time.perf_counter()
    open_viewer(browser, page)
    print(f"page with 1,000 detections: opened in {time.perf_counter() - started:.2f} s")
    best_first = sorted(busy, key=lambda d: -d["score"])

    for threshold, max_bars in ((0.0, 200), (0.0, 1000), (0.97, 1000), (0.5, 100)):
        set_max_bars(browser, max_bars)
        set_slider(browser, threshold)
        bars = bar_rects(browser, ".det-bar")
        assert len(bars) == 1000
        above = [d for d in best_first if d["score"] >= threshold]
        shown = [b for b in bars if b["shown"]]
        assert sorted(b["score"] for b in shown) == sorted(d["score"] for d in above[:max_bars])
        count = browser.evaluate("document.getElementById('visible-count').textContent")
        expected = f"{len(shown)} of 1000 detections shown"
        if len(above) > max_bars:
            expected += f" (the best of {len(above)} \u2265 min score)"
        assert count == expected
        rows: dict[float, list[dict]] = {}
        for bar in shown:
            rows.setdefault(bar["top"], []).append(bar)
        assert len(rows) <= MAX_LANES
        # no two bars of a row overlap, but in the last row when the page says that it is shared
        shared = not browser.evaluate("document.getElementById('overflow-note').hidden")
        if len(shown) >= 200 or len(shown) <= 40:  # 200 bars of 0.3 s on 4 s cannot fit 10 rows; 40 can
            assert shared == (len(shown) >= 200)
        for _, row in sorted(rows.items())[:-1] if shared else sorted(rows.items()):
            row.sort(key=lambda b: b["left"])
            assert all(a["left"] + a["width"] <= b["left"] + 0.5 for a, b in zip(row, row[1:]))
    milliseconds = browser.evaluate("""(() => { const slider = document.getElementById('score-threshold');
        document.getElementById('max-bars').value = '1000';
        const t0 = performance.now(); slider.value = '0.5'; slider.dispatchEvent(new Event('input'));
        document.body.getBoundingClientRect(); return performance.now() - t0; })()""")
    print(f"slider move over 1,000 detections: {milliseconds:.1f} ms in the page")
    assert browser.page_problems() == []
