"""The page of `unet-sep serve` in a real browser (issue 28, section 4): Debian's chromium driven by Selenium,
headless, against a real server process on 127.0.0.1. A real song is uploaded, its progress watched, its stems
played while the job still runs (solo, seek, pause, checked through the page's test hook and the levels its audio
graph sends out), the zip downloaded through the page's link and its stems checked against the input. Also: the
page at a phone's width, the page without server-sent events (polling, two files at once, a FLAC stem's link,
delete), a text file named .mp3 chosen or dropped (the server's one line in the page), and a server with a token.
Skips with the reason when no browser can start or ../shared is absent."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import EXAMPLE_MP3
from tests.serve_support import ServerProcess
from unet_sep.dsp.measures import snr_db

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

SCREENSHOT_DIR_VARIABLE = "UNET_SEP_SCREENSHOTS"  # a folder the finished page's screenshot is also copied to
LOOPS = 14           # the song excerpt (10.9 s) repeated 14 times: 152 s, long enough to play before the job ends
SUM_SNR_DB = 120.0   # the stems add up to the input: 148.8 dB measured (float WAV stems of a 16-bit input)
# the most of a stem the page may hold, in seconds: app.js's BEHIND_SECONDS (20) + AHEAD_SECONDS (60) + one
# CHUNK_SECONDS (2) in flight, and a tick (0.1 s) of playback before what fell behind is dropped
HELD_BOUND_SECONDS = 20 + 60 + 2 + 0.5
FAR_SECONDS = 125.0  # a far seek into the 152 s song (5.3 s into its 12th loop, where both stems sound)


@contextlib.contextmanager
def _running_server(folder: Path, *options: str):
    """`python -m unet_sep serve` on a free port of 127.0.0.1 (as the server's own tests start it); stopped with
    SIGTERM, it must end cleanly. It separates on the CPU on any machine, so that the 152 s song takes seconds and
    the page can start playing it before its job ends (a GPU could finish it first)."""
    server = ServerProcess(folder / "data", "--device", "cpu", *options)
    try:
        yield server
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    status, stderr = server.stop()
    # the exit status of a command a signal ended (128 + 15), as the CLI's; no traceback
    assert status == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server with the bundled model, shared by the tests of this file."""
    with _running_server(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    """Headless chromium with autoplay allowed and downloads going to ``downloads``; skips if none can start."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no browser: Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1000",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    except WebDriverException as error:
        pytest.skip(f"chromium could not start: {error.msg or error}".splitlines()[0])
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def long_song(tmp_path_factory) -> Path:
    """The real song excerpt looped to 152 s as 16-bit FLAC, under a name with markup in it."""
    if not EXAMPLE_MP3.exists():
        pytest.skip(f"{EXAMPLE_MP3} is absent (../shared)")
    samples, rate = sf.read(EXAMPLE_MP3, dtype="float32", always_2d=True)
    path = tmp_path_factory.mktemp("song") / "Slow Motion Dream <em>looped<em> & more.flac"
    sf.write(path, np.tile(samples, (LOOPS, 1)), rate, subtype="PCM_16")
    return path


def _state(driver) -> dict | None:
    return driver.execute_script("return window.unetSep.state()")


def _wait(predicate, timeout: float, what: str, step: float = 0.1):
    """Polls ``predicate`` until it returns something true (returned), or fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def _console_errors(driver) -> list[str]:
    """What the page logged as errors (failed requests, exceptions) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _open_page(driver, server) -> int:
    """Loads the page and waits until it shows the model and every job the server has; how many jobs."""
    driver.get(server.url + "/")
    _wait(lambda: driver.find_element(By.ID, "model").text.startswith("Model: "), 20, "the model's name")
    jobs = len(server.client.get("/api/jobs").json()["jobs"])
    _wait(lambda: len(_job_rows(driver)) == jobs, 20, f"the {jobs} jobs listed")
    return jobs


def _job_rows(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#jobs .job")  # newest first


def _new_rows(driver, before: int, count: int) -> list:
    """The rows of the ``count`` jobs made since there were ``before``, newest first, once all are listed."""
    def listed() -> list | None:
        rows = _job_rows(driver)
        return rows[:count] if len(rows) == before + count else None

    return _wait(listed, 60, f"{count} new job(s) listed")


def test_a_song_plays_while_it_is_separated_and_its_zip_adds_up(server, browser, downloads, long_song, tmp_path):
    driver = browser
    before = _open_page(driver, server)
    assert not driver.find_element(By.ID, "zip").is_displayed()  # no zip before a job is done
    driver.find_element(By.ID, "files").send_keys(str(long_song))

    # the job's row: the file name shown as text (the markup in it is not markup), progress that grows
    (row,) = _new_rows(driver, before, 1)
    assert row.find_element(By.CSS_SELECTOR, ".job-name").text == long_song.name
    assert not row.find_elements(By.CSS_SELECTOR, ".job-name em")
    job_id = row.get_attribute("data-job")
    progress_seen: list[float] = []

    def look() -> dict:
        """The player's state, noting the job's progress bar on the way."""
        progress_seen.append(float(row.find_element(By.TAG_NAME, "progress").get_attribute("value")))
        return _state(driver)

    def playable() -> dict | None:
        state = look()
        return state if state and state["buffered"] >= 2 else None

    _wait(playable, 120, "the player to have 2 s of every stem")
    driver.find_element(By.ID, "play").click()
    assert not driver.find_element(By.ID, "zip").is_displayed()
    state = _wait(lambda: (s := look()) and s["playing"] and s["position"] > 0.3 and s, 10, "playback")
    job = server.client.get(f"/api/jobs/{job_id}").json()
    assert state["status_at_first_play"] == "running" and job["status"] == "running", (state, job)
    assert job["available_seconds"] < job["duration_seconds"] == pytest.approx(LOOPS * 479832 / 44100, abs=0.01)
    assert sorted(state["audible"]) == ["accompaniment", "vocals"]
    _wait(lambda: all(stem["level"] > 1e-3 for stem in look()["stems"].values()), 5, "both stems to sound")

    # solo vocals: only the vocals reach the output
    driver.find_element(By.CSS_SELECTOR, '.stem[data-stem="vocals"] .stem-solo').click()
    state = look()
    assert state["audible"] == ["vocals"] and state["stems"]["vocals"]["solo"]
    time.sleep(0.2)  # the meters hold the last 2048 samples (46 ms)
    levels = {name: stem["level"] for name, stem in look()["stems"].items()}
    assert levels["accompaniment"] == 0 and levels["vocals"] > 0, levels
    assert driver.find_element(By.CSS_SELECTOR, '.stem[data-stem="vocals"] .stem-solo') \
        .get_attribute("aria-pressed") == "true"
    # mute wins over solo; the volume (keys on its slider) scales the whole mix
    mute = driver.find_element(By.CSS_SELECTOR, '.stem[data-stem="vocals"] .stem-mute')
    mute.click()
    assert look()["audible"] == [] and mute.get_attribute("aria-pressed") == "true"
    mute.click()
    assert look()["audible"] == ["vocals"]
    volume = driver.find_element(By.ID, "volume")
    volume.send_keys(Keys.HOME)
    _wait(lambda: look()["volume"] == 0, 5, "the volume at 0")
    volume.send_keys(Keys.END)
    _wait(lambda: look()["volume"] == 1, 5, "the volume back at 1")

    # seek with the keyboard (the arrow keys move 5 s), and pause and resume with space
    before = look()["position"]
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    after = look()["position"]
    assert 4.5 < after - before < 5.6, (before, after)
    body.send_keys(Keys.SPACE)
    paused = look()
    time.sleep(0.5)
    assert not paused["playing"] and look()["position"] == paused["position"]
    body.send_keys(Keys.SPACE)
    _wait(lambda: look()["position"] > paused["position"] + 0.2, 5, "playback to resume")

    # seek with a click on a waveform, half way through, while the job may still run
    canvas = driver.find_element(By.CSS_SELECTOR, '.stem[data-stem="vocals"] canvas')
    driver.execute_script("""const box = arguments[0].getBoundingClientRect();
        arguments[0].dispatchEvent(new MouseEvent("click", {clientX: box.left + box.width / 2,
                                                            clientY: box.top + 5, bubbles: true}));""", canvas)
    middle = job["duration_seconds"] / 2
    assert abs(look()["position"] - middle) < 0.5
    # where the stems are not written yet, playback waits there (stalled) and goes on from there
    _wait(lambda: (s := look())["playing"] and s["position"] > middle + 0.5, 300, "playback after the seek")
    assert look()["position"] < middle + 5

    # the job ends: progress went up through values below 1, the zip link appears
    _wait(lambda: row.find_element(By.CSS_SELECTOR, ".job-status").text == "done", 600, "the job to finish", 0.5)
    assert any(0 < value < 1 for value in progress_seen) and progress_seen == sorted(progress_seen), progress_seen
    zip_link = _wait(lambda: (link := driver.find_element(By.ID, "zip")).is_displayed() and link, 10, "the zip link")
    # the stems are fetched one request each at a time: wait for every stem's window to reach the end
    _wait(lambda: all(stem["complete"] for stem in look()["stems"].values()), 60, "every stem's end in the page")
    state = look()
    assert state["buffered"] == pytest.approx(job["duration_seconds"], abs=1e-3)
    assert state["late_chunks"] == 0  # every chunk was scheduled before its time on the one clock: no gap heard
    assert not _console_errors(driver)
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 1000

    screenshot = tmp_path / "serve.png"  # the whole page, not only what the window shows
    picture = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    screenshot.write_bytes(base64.b64decode(picture["data"]))
    if os.environ.get(SCREENSHOT_DIR_VARIABLE):
        folder = Path(os.environ[SCREENSHOT_DIR_VARIABLE])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, folder / "serve.png")

    zip_link.click()
    archive = _wait(lambda: next((p for p in downloads.glob("*.zip")), None), 60, "the zip download")
    _wait(lambda: not list(downloads.glob("*.crdownload")), 60, "the zip download to end")
    mixture, rate = sf.read(long_song, dtype="float64", always_2d=True)
    stems = {}
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == ["accompaniment.wav", "vocals.wav"]
        for name in bundle.namelist():
            with bundle.open(name) as member:
                stems[name], stem_rate = sf.read(member, dtype="float64", always_2d=True)
            assert stem_rate == rate and stems[name].shape == mixture.shape, (name, stems[name].shape)
    assert snr_db(mixture, sum(stems.values())) > SUM_SNR_DB


def _seek_by_slider(driver, seconds: float) -> None:
    """Moves the position slider to ``seconds`` as a user dragging it does (an input event)."""
    driver.execute_script("""const slider = document.getElementById("position");
        slider.value = String(arguments[0]);
        slider.dispatchEvent(new Event("input", {bubbles: true}));""", seconds)


def _waveform_drawn_at(driver, stem: str, fraction: float) -> bool:
    """Whether the waveform of ``stem`` has anything drawn in its pixel column at ``fraction`` of its width."""
    return driver.execute_script("""const canvas = document.querySelector(`.stem[data-stem="${arguments[0]}"] canvas`);
        const x = Math.min(canvas.width - 1, Math.round(arguments[1] * canvas.width));
        const column = canvas.getContext("2d").getImageData(x, 0, 1, canvas.height).data;
        for (let i = 3; i < column.length; i += 4) if (column[i] > 0) return true;
        return false;""", stem, fraction)


def test_a_long_song_is_played_from_a_bounded_window_of_samples(server, browser, long_song):
    """The page holds at most HELD_BOUND_SECONDS of each stem of a 152 s song, whatever it does: playing while
    the job runs, after the job ends, after a seek by slider far ahead and one back to the start, where playback
    sounds again with no chunk late. The waveform keeps the peaks of samples the page has dropped, and shows
    those it never held (read for the peaks only while the window is full)."""
    driver = browser
    before = _open_page(driver, server)
    driver.find_element(By.ID, "files").send_keys(str(long_song))
    (row,) = _new_rows(driver, before, 1)
    held_seen: list[float] = []  # the most seconds any stem held, at every look

    def look() -> dict:
        state = _state(driver)
        if state:
            held_seen.append(max(stem["held_seconds"] for stem in state["stems"].values()))
        return state

    def sounding_from(seconds: float) -> dict | None:
        state = look()
        ok = state["playing"] and state["position"] > seconds + 0.3
        return state if ok and all(stem["level"] > 0 for stem in state["stems"].values()) else None

    _wait(lambda: (s := look()) and s["buffered"] >= 2, 120, "the player to have 2 s of every stem")
    driver.find_element(By.ID, "play").click()
    _wait(lambda: look()["playing"], 10, "playback")
    _wait(lambda: (look(), row.find_element(By.CSS_SELECTOR, ".job-status").text == "done")[1], 300,
          "the job to finish", 0.5)
    time.sleep(3)  # time for the page to fetch what it wants of the finished stems
    state = look()
    duration = state["duration"]
    assert duration == pytest.approx(LOOPS * 479832 / 44100, abs=0.01)
    assert duration > 1.5 * HELD_BOUND_SECONDS  # a song the window matters for
    assert max(held_seen) <= HELD_BOUND_SECONDS, max(held_seen)

    # far ahead: the window moves there, playback sounds there, the start of the song is let go
    _seek_by_slider(driver, FAR_SECONDS)
    state = _wait(lambda: sounding_from(FAR_SECONDS), 30, "playback after the seek far ahead")
    assert state["position"] < FAR_SECONDS + 5, state["position"]
    time.sleep(1)
    for name, stem in look()["stems"].items():
        # the window was emptied and fetched from the seek to the end of the song
        assert stem["held_from"] == pytest.approx(FAR_SECONDS, abs=1e-3), (name, stem)
        assert stem["held_to"] == pytest.approx(duration, abs=1e-3) and stem["complete"], (name, stem)
        assert stem["peaks"] <= 4096, (name, stem["peaks"])
    for name in state["stems"]:
        # the samples at 10 s are gone, their peaks are still drawn; so are those at 100 s, never in the window
        assert _waveform_drawn_at(driver, name, 10 / duration), name
        _wait(lambda stem=name: _waveform_drawn_at(driver, stem, 100 / duration), 20, f"the peaks of {name} at 100 s")

    # back to the start: fetched again, sounds again
    _seek_by_slider(driver, 3)
    state = _wait(lambda: sounding_from(3), 30, "playback after the seek back")
    time.sleep(2)
    state = look()
    for name, stem in state["stems"].items():
        assert stem["held_from"] == pytest.approx(3, abs=1e-3) and 3 < stem["held_to"] <= 3 + HELD_BOUND_SECONDS, \
            (name, stem)
    assert state["late_chunks"] == 0  # every chunk after each seek was scheduled before its time
    assert max(held_seen) <= HELD_BOUND_SECONDS, max(held_seen)
    assert not _console_errors(driver)


def test_the_page_is_readable_at_a_phone_width(server, browser):
    """At 360 px nothing is wider than the screen, the list of jobs and the player of a song included."""
    if not EXAMPLE_MP3.exists():
        pytest.skip(f"{EXAMPLE_MP3} is absent (../shared)")
    driver = browser
    driver.set_window_size(360, 800)
    try:
        _open_page(driver, server)
        driver.find_element(By.ID, "files").send_keys(str(EXAMPLE_MP3.resolve()))
        _wait(lambda: _state(driver), 60, "the player")
        width = driver.execute_script("return document.documentElement.clientWidth")
        assert width <= 360
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width  # no sideways scroll
        for selector in ('label[for="files"]', "#play", "#position", ".stem-solo", ".stem-mute", "canvas", "#format"):
            box = driver.find_element(By.CSS_SELECTOR, selector).rect
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)

        # the keyboard reaches the play button, and its focus is drawn
        focused = driver.switch_to.active_element
        for _ in range(30):
            if focused.get_attribute("id") == "play":
                break
            ActionChains(driver).send_keys(Keys.TAB).perform()  # to whatever has the focus (a file input too)
            focused = driver.switch_to.active_element
        assert focused.get_attribute("id") == "play" and focused.tag_name == "button"
        assert (focused.value_of_css_property("outline-style"), focused.value_of_css_property("outline-width")) \
            == ("solid", "3px")
    finally:
        driver.set_window_size(1000, 1000)


def test_without_server_sent_events_the_page_polls_and_downloads_a_stem(server, browser, downloads, tmp_path):
    """Two files chosen at once on a page without EventSource: both followed to the end by polling; a stem
    downloaded as FLAC through its link has the input's length; a job deleted from the page is gone."""
    if not EXAMPLE_MP3.exists():
        pytest.skip(f"{EXAMPLE_MP3} is absent (../shared)")
    driver = browser
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                    {"source": "delete window.EventSource; window.EventSource = undefined;"})
    try:
        before = _open_page(driver, server)
        assert driver.execute_script("return typeof EventSource") == "undefined"
        songs = [tmp_path / "first.mp3", tmp_path / "second.mp3"]
        for song in songs:
            shutil.copy(EXAMPLE_MP3, song)
        driver.find_element(By.ID, "files").send_keys("\n".join(str(song) for song in songs))
        rows = _new_rows(driver, before, 2)
        assert [row.find_element(By.CSS_SELECTOR, ".job-name").text for row in rows] == ["second.mp3", "first.mp3"]
        _wait(lambda: all(row.find_element(By.CSS_SELECTOR, ".job-status").text == "done" for row in rows), 300,
              "both jobs to finish, seen by polling", 0.5)

        first = rows[1]
        first.find_element(By.CSS_SELECTOR, ".job-open").click()
        _wait(lambda: (s := _state(driver)) and s["stems"]["vocals"]["complete"], 60, "the first job's samples")
        driver.find_element(By.CSS_SELECTOR, '#format option[value="flac"]').click()
        link = driver.find_element(By.CSS_SELECTOR, '.stem[data-stem="vocals"] .stem-download')
        assert link.text == "Download vocals (FLAC)" and link.get_attribute("href").endswith("?format=flac")
        link.click()
        flac = _wait(lambda: next(iter(downloads.glob("*.flac")), None), 60, "the FLAC download")
        _wait(lambda: not list(downloads.glob("*.crdownload")), 60, "the FLAC download to end")
        info = sf.info(flac)
        assert (info.format, info.frames, info.samplerate, info.channels) == ("FLAC", 479832, 44100, 2)

        job_id = first.get_attribute("data-job")
        first.find_element(By.CSS_SELECTOR, ".job-delete").click()
        _wait(lambda: not driver.find_elements(By.CSS_SELECTOR, f'#jobs .job[data-job="{job_id}"]'), 10,
              "the row to go")
        assert server.client.get(f"/api/jobs/{job_id}").status_code == 404
        assert not driver.find_element(By.ID, "player").is_displayed()
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})


def test_a_text_file_named_mp3_shows_the_servers_message(server, browser, tmp_path):
    not_audio = tmp_path / "notes.mp3"
    not_audio.write_text("these are notes, not a song\n" * 20)
    driver = browser
    jobs_before = _open_page(driver, server)
    driver.find_element(By.ID, "files").send_keys(str(not_audio))
    message = _wait(lambda: (m := driver.find_element(By.ID, "message")).is_displayed() and m.text, 60,
                    "the message")
    assert message.startswith("notes.mp3") and len(message.splitlines()) == 1, message
    # the line is the server's own (as the CLI prints it), found at upload: no job was made
    assert "not a readable audio file" in message and "Traceback" not in message
    assert len(server.client.get("/api/jobs").json()["jobs"]) == jobs_before
    assert any("422" in line for line in _console_errors(driver))  # the refusal; (the log the song test reads)

    # the same file dropped on the page: the same line
    driver.execute_script("document.getElementById('message').hidden = true")
    driver.execute_script("""const files = new DataTransfer();
        files.items.add(new File([arguments[0]], "notes.mp3", {type: "audio/mpeg"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: files, bubbles: true,
                                                                             cancelable: true}));""",
                          not_audio.read_text())
    dropped = _wait(lambda: (m := driver.find_element(By.ID, "message")).is_displayed() and m.text, 60,
                    "the message of the dropped file")
    assert dropped == message
    assert _state(driver) is None


def test_a_server_with_a_token_gets_it_from_the_page(browser, tmp_path):
    token = "s3cret-token"
    with _running_server(tmp_path, "--token", token) as server:
        driver = browser
        driver.get(server.url + "/")
        form = _wait(lambda: (f := driver.find_element(By.ID, "token-form")).is_displayed() and f, 20, "the token form")
        assert "needs its access token" in form.text
        driver.find_element(By.ID, "token").send_keys(token + Keys.ENTER)
        _wait(lambda: driver.find_element(By.ID, "model").text.startswith("Model: "), 20, "the model's name")
        assert not driver.find_element(By.ID, "token-form").is_displayed()
        driver.execute_script("sessionStorage.clear()")
