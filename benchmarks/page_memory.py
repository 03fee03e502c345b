"""Memory of the page of ``unet-sep serve`` playing a long song: the real excerpt looped to ``--minutes``,
separated by a real server on 127.0.0.1, then played in headless chromium (Debian's, through Selenium) with seeks
by the position slider across the song. Prints, after each seek and some seconds of playback, the seconds of
samples the page holds per stem (from its test hook ``window.unetSep.state()``), what they weigh as float32,
and the resident memory of the browser's renderer processes (where the page's AudioBuffers live); then the peaks.

    python benchmarks/page_memory.py                     # a 10-minute song, 5 seeks, 6 s of playback after each
    python benchmarks/page_memory.py --minutes 60 --settle 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from machine import cpu_name  # benchmarks/machine.py
from serve_load import EXCERPT, start_server  # benchmarks/serve_load.py
from tqdm import tqdm

SEEK_FRACTIONS = (0.1, 0.85, 0.35, 0.6, 0.02)  # where the slider is moved to, as fractions of the song


def make_song(folder: Path, minutes: float) -> Path:
    """The excerpt repeated to ``minutes`` (whole loops), as a 16-bit stereo FLAC."""
    samples, rate = sf.read(str(EXCERPT), dtype="float32", always_2d=True)
    loops = max(1, round(minutes * 60 * rate / len(samples)))
    path = folder / "long.flac"
    sf.write(str(path), np.tile(samples, (loops, 1)), rate, subtype="PCM_16")
    return path


def separate(url: str, song: Path) -> dict:
    """Uploads ``song`` and waits for its job to be done (a progress bar); the job."""
    with song.open("rb") as file:
        response = httpx.post(url + "/api/jobs", files={"file": (song.name, file)}, timeout=300)
    if response.status_code != 201 and response.status_code != 200:
        raise SystemExit(f"error: {song}: the server answered {response.status_code}: {response.text[:200]}")
    job = response.json()
    with tqdm(total=100, desc="separating", unit="%") as bar:
        while job["status"] not in ("done", "failed"):
            time.sleep(0.5)
            job = httpx.get(f"{url}/api/jobs/{job['id']}", timeout=60).json()
            bar.update(round((job["progress"] or 0) * 100) - bar.n)
    if job["status"] != "done":
        raise SystemExit(f"error: {song}: the job failed: {job['error']}")
    return job


def start_browser():
    """Headless chromium with autoplay allowed (muted); exits with one line where none can start."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("error: chromium and chromium-driver (Debian's) are needed")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1000",
                     "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(options=options, service=Service(driver_path))
    except WebDriverException as error:
        raise SystemExit(f"error: chromium could not start: {(error.msg or str(error)).splitlines()[0]}") from None


def renderer_mb(root_pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM; MB) of the renderer processes under ``root_pid``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    now = peak = 0.0
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        except OSError:
            continue
        now += int(status["VmRSS"].split()[0]) / 1024
        peak += int(status["VmHWM"].split()[0]) / 1024
    return now, peak


def held_seconds(state: dict) -> float:
    """The most seconds of samples any stem holds (a page without a window holds all it fetched)."""
    return max(stem.get("held_seconds", stem["fetched_seconds"]) for stem in state["stems"].values())


def play_and_seek(driver, url: str, job: dict, settle: float) -> list[tuple]:
    """Opens the job's player, plays, seeks by the slider to each of SEEK_FRACTIONS and plays ``settle`` s; a
    row per seek: (position, held seconds per stem, held MB of all stems, renderer RSS MB)."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    deadline = time.monotonic() + 60
    while not driver.find_elements(By.CSS_SELECTOR, f'.job[data-job="{job["id"]}"] .job-open:enabled'):
        if time.monotonic() > deadline:
            raise SystemExit("error: the page did not list the job within 60 s")
        time.sleep(0.2)
    driver.find_element(By.CSS_SELECTOR, f'.job[data-job="{job["id"]}"] .job-open').click()
    time.sleep(1)
    driver.find_element(By.ID, "play").click()
    pid = driver.service.process.pid
    stems = len(job["stems"])
    bytes_per_second = job["sample_rate"] * job["channels"] * 4
    rows = []
    for fraction in tqdm(SEEK_FRACTIONS, desc="seeks", unit="seek"):
        driver.execute_script("""const slider = document.getElementById("position");
            slider.value = String(arguments[0]);
            slider.dispatchEvent(new Event("input", {bubbles: true}));""", fraction * job["duration_seconds"])
        time.sleep(settle)
        state = driver.execute_script("return window.unetSep.state()")
        held = held_seconds(state)
        rows.append((state["position"], held, held * bytes_per_second * stems / 1e6, renderer_mb(pid)[0]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the song (default 10)")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds played after each seek (default 6)")
    args = parser.parse_args()
    if not EXCERPT.is_file():
        raise SystemExit(f"error: {EXCERPT}: the real song excerpt is missing (../shared)")
    if not (args.minutes > 0 and args.settle > 0):
        raise SystemExit("error: --minutes and --settle must be above 0")
    with tempfile.TemporaryDirectory(prefix="page-memory-") as scratch:
        folder = Path(scratch)
        song = make_song(folder, args.minutes)
        process, url = start_server(folder / "data", 4)
        try:
            job = separate(url, song)
            driver = start_browser()
            try:
                rows = play_and_seek(driver, url, job, args.settle)
                peak = renderer_mb(driver.service.process.pid)[1]
            finally:
                driver.quit()
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=120)
    print(f"unet-sep serve page memory, {cpu_name()}, {os.cpu_count()} cores, headless chromium, "
          f"a {job['duration_seconds']:.0f} s song, {len(job['stems'])} stems, {args.settle:g} s played per seek")
    print(f"{'position s':>10}  {'held s/stem':>11}  {'held MB (all stems)':>19}  {'renderer RSS MB':>15}")
    for position, held, held_mb, rss in rows:
        print(f"{position:>10.1f}  {held:>11.1f}  {held_mb:>19.1f}  {rss:>15.0f}")
    print(f"most held: {max(row[1] for row in rows):.1f} s per stem; renderer RSS peak (VmHWM): {peak:.0f} MB")


if __name__ == "__main__":
    main()
