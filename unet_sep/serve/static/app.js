// unet-sep's page: upload songs, follow each job, play its stems in sync while they are being written.
// Plain script, no build step, nothing fetched from outside this server. User data (file names, error lines)
// only ever reaches the page through textContent.
"use strict";

(() => {
  // The page holds only a window of each stem's samples around the playing position, whatever the song's
  // length: what falls further behind than BEHIND_SECONDS is dropped, and no more than AHEAD_SECONDS past the
  // position is fetched (plus the one chunk in flight). A seek outside the window fetches from the new position.
  const BEHIND_SECONDS = 20;
  const AHEAD_SECONDS = 60;
  const CHUNK_SECONDS = 2;        // samples asked of the pcm endpoint at a time, per stem
  const SCAN_SECONDS = 10;        // samples asked at a time for the waveform's peaks only (not kept)
  const IDLE_MS = 250;            // how often a stem with nothing to fetch looks again (a seek wakes it at once)
  const LOOKAHEAD_SECONDS = 4;    // how far ahead of the playing position chunks are scheduled
  const START_DELAY = 0.1;        // seconds between pressing play and the first sample
  const RESUME_MARGIN = 1;        // seconds buffered past the position before a stalled player resumes
  const STALL_MARGIN = 0.25;      // the player stalls this close to the end of what is fetched (ticks are 0.1 s)
  const POLL_MS = 1000;           // polling interval where server-sent events are unavailable
  const PEAK_BLOCK_SECONDS = 0.02; // one waveform peak per this many seconds of samples, at first
  const PEAK_COUNT = 4096;        // peaks kept per stem: blocks double in length to fit the song in this many
  const SEEK_STEP = 5;
  const FINAL = new Set(["done", "failed"]);

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- the API ----

  /** The access token, when the server wants one: given once as #token=... in the page's address, or in the
   * form the page shows when the server answers 401; kept for this tab's session. */
  const token = (() => {
    const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem("unet-sep-token", decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("unet-sep-token");
  })();

  /** A URL of the API with the token as a query parameter (for links and event streams, which send no headers). */
  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function request(url, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(url, Object.assign({}, options, { headers })).then((response) => {
      if (response.status === 401) $("token-form").hidden = false;
      return response;
    });
  }

  function bindTokenForm() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem("unet-sep-token", $("token").value);
      location.reload();
    });
  }

  /** The one line an error response carries ({"error": "..."}), or its status when it carries none. */
  async function errorLine(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) { /* not JSON */ }
    return `the server answered ${response.status} ${response.statusText}`.trim();
  }

  async function getJSON(url) {
    const response = await request(url);
    if (!response.ok) throw new Error(await errorLine(response));
    return response.json();
  }

  // ---- messages ----

  function showMessage(text) {
    const message = $("message");
    message.textContent = text;
    message.hidden = !text;
  }

  function formatTime(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
    const whole = Math.floor(seconds);
    return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
  }

  // ---- the player of one job's stems ----

  class StemTrack {
    /** One stem: its chunks of samples as AudioBuffers, its gain, its meter and its waveform. */
    constructor(player, name, info, element) {
      this.player = player;
      this.name = name;
      this.pcmUrl = info.pcm_url;
      this.url = info.url;
      this.element = element;
      this.canvas = element.querySelector("canvas");
      this.chunks = [];       // {start (samples), buffer (AudioBuffer)}, in order, without gaps: the window
      this.first = 0;         // the first sample held (per channel); the window is [first, next)
      this.next = 0;          // the sample after the last one held, where the next fetch starts
      this.generation = 0;    // bumped when the window moves elsewhere: answers to older fetches are dropped
      this.wake = null;       // ends the rest of a stem waiting to fetch (a full window, nothing written yet)
      this.scanned = 0;       // the waveform's peaks are known up to this sample (beyond it: those of the window)
      this.available = 0;     // samples the server has written so far
      this.finished = false;  // the server has written the whole stem
      this.complete = false;  // ... and the window reaches its end
      this.solo = false;
      this.muted = false;
      this.peaks = new Float32Array(PEAK_COUNT).fill(-1); // largest |sample| of each block; -1: not seen
      this.peakBlock = Math.max(1, Math.round(PEAK_BLOCK_SECONDS * player.rate)); // samples per peak
      this.peakVersion = 0;   // bumped when a peak changes, to redraw
      const context = player.context;
      this.gain = context.createGain();
      this.meter = context.createAnalyser();
      this.meter.fftSize = 2048;
      this.gain.connect(this.meter);
      this.gain.connect(player.master);
    }

    /** Keeps the window filled from the pcm endpoint as the position moves and the stem is written, and while
     * it is full, reads the rest of the stem for the waveform's peaks; until the player closes. */
    async fetchLoop() {
      while (!this.player.closed && !this.player.jobFailed()) {
        const { start, count, keep } = this.nextFetch();
        if (count === 0) {
          await this.rest(IDLE_MS);
          continue;
        }
        const generation = this.generation;
        let response;
        try {
          response = await request(withToken(`${this.pcmUrl}?start=${start}&count=${count}`));
        } catch (error) {
          this.player.report(`${this.name}: ${error.message}`);
          await sleep(POLL_MS);
          continue;
        }
        if (!response.ok) {
          const line = await errorLine(response);
          if (this.player.closed) return;
          this.player.report(`${this.name}: ${line}`);
          if (response.status === 404 || response.status === 410) return;
          await sleep(POLL_MS);
          continue;
        }
        const bytes = await response.arrayBuffer();
        if (this.player.closed) return;
        let got;
        if (keep) {
          if (generation !== this.generation) continue; // the window moved while this was on its way
          got = this.addChunk(response, bytes);
        } else {
          got = this.addScan(response, bytes, start);
        }
        if (got < count && !this.complete) {
          await this.rest(this.player.job.status === "running" ? 300 : POLL_MS); // queued: no hurry
        }
      }
    }

    /** What to ask for next: the window's next chunk (kept) while the window is not full, else the next samples
     * whose peaks are not known yet (for the waveform, not kept); a count of 0 when there is nothing to ask. */
    nextFetch() {
      const rate = this.player.rate;
      if (!this.complete && this.next < this.player.positionSample() + AHEAD_SECONDS * rate) {
        return { start: this.next, count: Math.round(CHUNK_SECONDS * rate), keep: true };
      }
      if (this.scanned >= this.first && this.scanned < this.next) this.scanned = this.next;
      const scan = this.scanned < this.available || !this.finished;
      return { start: this.scanned, count: scan ? Math.round(SCAN_SECONDS * rate) : 0, keep: false };
    }

    /** Notes the peaks of one pcm answer read for the waveform only; returns how many samples it held. */
    addScan(response, bytes, start) {
      const got = Number(response.headers.get("X-Count"));
      const channels = Number(response.headers.get("X-Channels")) || 1;
      this.available = Number(response.headers.get("X-Available"));
      this.finished = response.headers.get("X-Complete") === "1";
      if (got > 0) this.addPeaks(new Float32Array(bytes, 0, got * channels), channels, start);
      if (start === this.scanned) this.scanned += got;
      return got;
    }

    /** Waits `ms`, or less if the window moves (a seek) meanwhile. */
    async rest(ms) {
      await new Promise((resolve) => { this.wake = resolve; setTimeout(resolve, ms); });
      this.wake = null;
    }

    /** Moves the window to hold `sample` (a seek): kept if it is inside already (or at its end), else emptied
     * and fetched from there. */
    moveTo(sample) {
      if (sample >= this.first && sample <= this.next) return;
      this.chunks = [];
      this.first = this.next = sample;
      this.complete = this.finished && sample >= this.available;
      this.generation += 1;
      if (this.wake) this.wake();
    }

    /** Drops the chunks that end more than BEHIND_SECONDS before `sample`. */
    dropBefore(sample) {
      const limit = sample - BEHIND_SECONDS * this.player.rate;
      let drop = 0;
      while (drop < this.chunks.length && this.chunks[drop].start + this.chunks[drop].buffer.length <= limit) drop++;
      if (drop === 0) return;
      this.chunks.splice(0, drop);
      this.first = this.chunks.length ? this.chunks[0].start : this.next;
    }

    /** Samples held now, per channel. */
    held() { return this.next - this.first; }

    /** Adds the samples of one pcm answer (interleaved float32); returns how many (per channel) it held. */
    addChunk(response, bytes) {
      const header = (name) => Number(response.headers.get(name));
      const got = header("X-Count");
      const channels = header("X-Channels") || 1;
      this.available = header("X-Available");
      if (got > 0) {
        const samples = new Float32Array(bytes, 0, got * channels);
        const buffer = this.player.context.createBuffer(channels, got, this.player.rate);
        for (let c = 0; c < channels; c++) {
          const channel = buffer.getChannelData(c);
          for (let i = 0; i < got; i++) channel[i] = samples[i * channels + c];
        }
        const start = this.next;
        this.chunks.push({ start, buffer });
        this.next += got;
        this.addPeaks(samples, channels, start);
        this.dropBefore(this.player.positionSample());
      }
      this.finished = response.headers.get("X-Complete") === "1";
      this.complete = this.finished && this.next >= this.available;
      if (got > 0 || this.complete) this.player.chunkArrived(this);
      return got;
    }

    /** Notes the largest |sample| of each block of these samples (which start at sample `start`). */
    addPeaks(samples, channels, start) {
      const frames = samples.length / channels;
      while (Math.floor((start + frames - 1) / this.peakBlock) >= PEAK_COUNT) this.coarsenPeaks();
      const peaks = this.peaks;
      const block = this.peakBlock;
      for (let i = 0; i < frames; i++) {
        const index = Math.floor((start + i) / block);
        let peak = Math.max(0, peaks[index]);
        for (let c = 0; c < channels; c++) peak = Math.max(peak, Math.abs(samples[i * channels + c]));
        peaks[index] = peak;
      }
      this.peakVersion += 1;
    }

    /** Halves the peaks' resolution (blocks twice as long) to make room for a song longer than they cover. */
    coarsenPeaks() {
      const peaks = this.peaks;
      for (let i = 0; i < PEAK_COUNT / 2; i++) peaks[i] = Math.max(peaks[2 * i], peaks[2 * i + 1]);
      peaks.fill(-1, PEAK_COUNT / 2);
      this.peakBlock *= 2;
    }

    /** Draws the waveform from the peaks of the samples fetched so far, the part before the position coloured. */
    draw(position, duration) {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
      const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      const g = canvas.getContext("2d");
      g.clearRect(0, 0, width, height);
      if (!(duration > 0)) return;
      const style = getComputedStyle(document.documentElement);
      const blocksPerSecond = this.player.rate / this.peakBlock;
      const playedX = (position / duration) * width;
      for (let x = 0; x < width; x++) {
        const from = Math.floor((x / width) * duration * blocksPerSecond);
        const to = Math.max(from + 1, Math.floor(((x + 1) / width) * duration * blocksPerSecond));
        if (from >= PEAK_COUNT) break;
        let peak = -1;
        for (let i = from; i < to && i < PEAK_COUNT; i++) peak = Math.max(peak, this.peaks[i]);
        if (peak < 0) continue;  // not fetched yet
        const half = Math.max(1, Math.min(1, peak) * height / 2);
        g.fillStyle = x < playedX ? style.getPropertyValue("--played") : style.getPropertyValue("--wave");
        g.fillRect(x, height / 2 - half, 1, half * 2);
      }
    }

    /** Root-mean-square level of what this stem sends to the output now (0 when silent). */
    level() {
      const samples = new Float32Array(this.meter.fftSize);
      this.meter.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const x of samples) sum += x * x;
      return Math.sqrt(sum / samples.length);
    }
  }

  class Player {
    /** Plays one job's stems on one AudioContext clock, fed from the pcm endpoint while the job runs. */
    constructor(job, report) {
      this.job = job;
      this.report = report;
      this.rate = job.sample_rate;
      this.context = new AudioContext({ sampleRate: this.rate, latencyHint: "playback" });
      this.master = this.context.createGain();
      this.master.gain.value = Number($("volume").value);
      this.master.connect(this.context.destination);
      this.closed = false;
      this.playing = false;
      this.stalled = false;      // paused by the player itself, waiting for samples
      this.origin = 0;           // context time at which `anchor` plays
      this.anchor = 0;           // the position (seconds) playing at `origin`
      this.paused = 0;           // the position while not playing
      this.sources = [];         // sources scheduled in this play run
      this.scheduled = new Map(); // stem name -> the sample after the last chunk scheduled in this play run
      this.statusAtFirstPlay = null;
      this.lateChunks = 0;       // chunks that should have started already when scheduled (a gap was heard)
      this.drawn = null;         // what the waveforms show (position, duration, samples), to redraw on change
      this.tracks = this.buildTracks(job);
      this.timer = setInterval(() => this.tick(), 100);
      for (const track of this.tracks) track.fetchLoop();
    }

    buildTracks(job) {
      const list = $("stems");
      list.replaceChildren();
      const template = $("stem-template");
      return Object.entries(job.stems).map(([name, info]) => {
        const element = template.content.firstElementChild.cloneNode(true);
        element.dataset.stem = name;
        element.querySelector(".stem-name").textContent = name;
        const track = new StemTrack(this, name, info, element);
        const solo = element.querySelector(".stem-solo");
        const mute = element.querySelector(".stem-mute");
        solo.setAttribute("aria-label", `Solo ${name}`);
        mute.setAttribute("aria-label", `Mute ${name}`);
        solo.addEventListener("click", () => this.toggle(track, "solo"));
        mute.addEventListener("click", () => this.toggle(track, "muted"));
        element.querySelector("canvas").addEventListener("click", (event) => {
          const box = event.currentTarget.getBoundingClientRect();
          this.seek(((event.clientX - box.left) / box.width) * this.duration());
        });
        list.append(element);
        return track;
      });
    }

    jobFailed() { return this.job.status === "failed"; }

    /** The song's length: the job's duration when known, else what the stems have so far. */
    duration() {
      if (this.job.duration_seconds) return this.job.duration_seconds;
      return Math.max(0, ...this.tracks.map((t) => Math.max(t.available, t.next) / this.rate));
    }

    /** Where every stem's window ends, in seconds (playback cannot go past it). */
    buffered() { return Math.min(...this.tracks.map((t) => t.next / this.rate)); }

    complete() { return this.tracks.every((t) => t.complete); }

    position() {
      if (!this.playing) return this.paused;
      return Math.max(0, this.anchor + (this.context.currentTime - this.origin));
    }

    /** The position as a sample index, where the stems' windows are kept. */
    positionSample() { return Math.round(this.position() * this.rate); }

    /** Moves every stem's window to hold the position `seconds` (fetching from there if it is outside). */
    moveWindows(seconds) {
      for (const track of this.tracks) track.moveTo(Math.round(seconds * this.rate));
    }

    audible(track) {
      const anySolo = this.tracks.some((t) => t.solo);
      return !track.muted && (!anySolo || track.solo);
    }

    toggle(track, what) {
      track[what] = !track[what];
      this.applyGains();
    }

    applyGains() {
      for (const track of this.tracks) {
        track.gain.gain.setValueAtTime(this.audible(track) ? 1 : 0, this.context.currentTime);
        track.element.querySelector(".stem-solo").setAttribute("aria-pressed", String(track.solo));
        track.element.querySelector(".stem-mute").setAttribute("aria-pressed", String(track.muted));
      }
    }

    setVolume(value) { this.master.gain.setValueAtTime(value, this.context.currentTime); }

    async play() {
      if (this.playing || this.stalled) return;
      if (this.statusAtFirstPlay === null) this.statusAtFirstPlay = this.job.status;
      await this.context.resume();
      if (this.paused >= this.duration() - 0.01 && this.complete()) this.paused = 0;
      this.moveWindows(this.paused);
      this.start(this.paused);
    }

    /** Starts a play run at `position` on a whole sample of the context clock, so chunks abut exactly. */
    start(position) {
      const rate = this.rate;
      this.anchor = Math.round(position * rate) / rate;
      this.origin = Math.ceil((this.context.currentTime + START_DELAY) * rate) / rate;
      this.playing = true;
      this.stalled = false;
      this.scheduled = new Map();
      this.schedule();
      this.render();
    }

    stopSources() {
      for (const source of this.sources) {
        try { source.stop(); } catch (_) { /* never started */ }
        source.disconnect();
      }
      this.sources = [];
    }

    pause() {
      if (this.stalled) { this.stalled = false; this.render(); return; }
      if (!this.playing) return;
      this.paused = Math.min(this.position(), this.duration());
      this.playing = false;
      this.stopSources();
      this.render();
    }

    togglePlay() {
      if (this.playing || this.stalled) this.pause(); else this.play();
    }

    seek(seconds) {
      const target = Math.max(0, Math.min(Number.isFinite(seconds) ? seconds : 0, this.duration()));
      this.moveWindows(target);
      if (this.playing) {
        this.stopSources();
        this.start(target);
      } else {
        this.paused = target;
        this.render();
      }
    }

    /** Schedules every fetched chunk that starts before the position plus the lookahead, on the one clock. */
    schedule() {
      if (!this.playing) return;
      const now = this.context.currentTime;
      const horizon = this.position() + LOOKAHEAD_SECONDS;
      for (const track of this.tracks) {
        let done = this.scheduled.get(track.name) ?? -Infinity;
        for (const chunk of track.chunks) {
          if (chunk.start < done) continue;   // scheduled already
          if (chunk.start / this.rate >= horizon) break;
          this.scheduleChunk(track, chunk, now);
          done = chunk.start + chunk.buffer.length;
        }
        this.scheduled.set(track.name, done);
      }
      this.sources = this.sources.filter((source) => !source.ended);
    }

    scheduleChunk(track, chunk, now) {
      const begins = chunk.start / this.rate;             // position of the chunk's first sample
      let when = this.origin + (begins - this.anchor);    // context time it plays at
      let offset = 0;
      if (when < now) {                                   // late: a seek into it, or it came too late
        if (begins > this.anchor + 0.5 / this.rate) this.lateChunks += 1;
        offset = (now - when) + 0.005;
        when = now + 0.005;
      }
      if (offset >= chunk.buffer.duration) return;
      const source = this.context.createBufferSource();
      source.buffer = chunk.buffer;
      source.connect(track.gain);
      source.onended = () => { source.ended = true; };
      source.start(when, offset);
      this.sources.push(source);
    }

    chunkArrived() {
      if (this.stalled && (this.buffered() >= this.paused + RESUME_MARGIN || this.complete())) {
        this.start(this.paused);
      }
      this.schedule();
      this.drawn = null; // redraw the waveforms
    }

    /** Every 100 ms: schedule ahead, stall when the samples run out, stop at the end, draw. */
    tick() {
      if (this.playing) {
        const position = this.position();
        if (this.complete() && position >= this.duration()) {
          this.paused = this.duration();
          this.playing = false;
          this.stopSources();
        } else if (!this.complete() && position >= this.buffered() - STALL_MARGIN) {
          // wait where the samples end, or where a seek ahead of them asked to play (not before it)
          this.paused = Math.max(this.anchor, Math.min(position, this.buffered()));
          this.playing = false;
          this.stalled = true;
          this.stopSources();
        } else {
          this.schedule();
        }
      }
      const sample = this.positionSample();
      for (const track of this.tracks) track.dropBefore(sample);
      this.render();
    }

    render() {
      const position = this.position();
      const duration = this.duration();
      const slider = $("position");
      slider.max = String(Math.max(duration, 0.01));
      if (document.activeElement !== slider || !this.playing) slider.value = String(position);
      $("time").textContent = `${formatTime(position)} / ${formatTime(duration)}`;
      const play = $("play");
      const busy = this.playing || this.stalled;
      play.textContent = busy ? "Pause" : "Play";
      play.setAttribute("aria-label", busy ? "Pause" : "Play");
      play.classList.toggle("playing", busy);
      const written = Math.min(...this.tracks.map((t) => t.available)) / this.rate;
      $("player-status").textContent = this.stalled ? "Waiting for the separation to catch up…" :
        this.tracks.every((t) => t.finished) ? "" : `${formatTime(written)} ready so far; playback can start now.`;
      const key = `${Math.round(position * 20)}/${duration}/${this.tracks.map((t) => t.peakVersion).join(",")}`;
      if (key !== this.drawn) {
        for (const track of this.tracks) track.draw(position, duration);
        this.drawn = key;
      }
    }

    update(job) { this.job = job; }

    close() {
      this.closed = true;
      clearInterval(this.timer);
      this.stopSources();
      this.context.close();
    }

    /** What the browser tests read: the position, which stems are audible, their output levels, and the window
     * of samples each stem holds (held_seconds from held_from to held_to; peaks: the waveform's numbers kept). */
    state() {
      const stems = {};
      for (const track of this.tracks) {
        stems[track.name] = {
          solo: track.solo, muted: track.muted, audible: this.audible(track), level: track.level(),
          fetched_seconds: track.next / this.rate, complete: track.complete,
          held_seconds: track.held() / this.rate, held_from: track.first / this.rate, held_to: track.next / this.rate,
          peaks: track.peaks.length,
        };
      }
      return {
        job: this.job.id, status: this.job.status, playing: this.playing, stalled: this.stalled,
        position: this.position(), duration: this.duration(), buffered: this.buffered(),
        volume: this.master.gain.value, context: this.context.state, sample_rate: this.rate,
        status_at_first_play: this.statusAtFirstPlay, late_chunks: this.lateChunks,
        audible: this.tracks.filter((t) => this.audible(t)).map((t) => t.name), stems,
      };
    }
  }

  // ---- the jobs ----

  class Page {
    constructor() {
      this.jobs = new Map();      // id -> {job, element}
      this.player = null;
      this.streams = new Map();   // id -> EventSource or polling flag
      this.waitingFor = null;     // a job whose player opens once it can play
    }

    async start() {
      bindTokenForm();
      this.bindUpload();
      this.bindPlayer();
      this.loadModels();
      try {
        const { jobs } = await getJSON("/api/jobs");
        for (const job of jobs.slice().reverse()) this.track(job);
      } catch (error) {
        showMessage(`Could not list the jobs: ${error.message}`);
      }
    }

    async loadModels() {
      try {
        const { models, loaded } = await getJSON("/api/models");
        const model = models.find((m) => m.name === loaded) || models[0];
        $("model").textContent = model ? `Model: ${model.name} (${model.stems.join(", ")})` : "";
        const choice = $("stems-choice");
        for (const stem of model ? model.stems : []) {
          const option = document.createElement("option");
          option.value = stem;
          option.textContent = `${stem} only`;
          choice.append(option);
        }
      } catch (error) {
        $("model").textContent = `Could not read the model: ${error.message}`;
      }
    }

    bindUpload() {
      const drop = $("drop");
      const input = $("files");
      input.addEventListener("change", () => {
        this.uploadAll(Array.from(input.files));
        input.value = "";
      });
      drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (event) => {
        event.preventDefault();
        drop.classList.remove("over");
        this.uploadAll(Array.from(event.dataTransfer.files));
      });
    }

    async uploadAll(files) {
      showMessage("");
      const failures = [];
      let first = true;
      for (const file of files) {
        const job = await this.upload(file, failures);
        if (job && first && !this.player) { this.whenPlayable(job.id); first = false; }
      }
      showMessage(failures.join(" "));
    }

    async upload(file, failures) {
      const form = new FormData();
      form.append("file", file, file.name);
      const stems = $("stems-choice").value;
      if (stems) form.append("stems", stems);
      try {
        const response = await request("/api/jobs", { method: "POST", body: form });
        if (!response.ok) {
          const line = await errorLine(response);
          failures.push(line.includes(file.name) ? line : `${file.name}: ${line}`);
          return null;
        }
        const job = await response.json();
        this.track(job);
        return job;
      } catch (error) {
        failures.push(`${file.name}: ${error.message}`);
        return null;
      }
    }

    /** Follows a job: a row in the list, updated from server-sent events, or by polling without them. */
    track(job) {
      if (!this.jobs.has(job.id)) {
        const element = $("job-template").content.firstElementChild.cloneNode(true);
        element.dataset.job = job.id;
        element.querySelector(".job-name").textContent = job.file_name;
        element.querySelector(".job-open").addEventListener("click", () => this.open(job.id));
        element.querySelector(".job-delete").addEventListener("click", () => this.remove(job.id));
        $("jobs").prepend(element);
        $("no-jobs").hidden = true;
        this.jobs.set(job.id, { job, element });
      }
      this.update(job);
      if (!FINAL.has(job.status)) this.follow(job.id);
    }

    follow(id) {
      if (this.streams.has(id)) return;
      if (typeof EventSource === "undefined") { this.poll(id); return; }
      const events = new EventSource(withToken(`/api/jobs/${encodeURIComponent(id)}/events`));
      this.streams.set(id, events);
      events.addEventListener("job", (event) => this.update(JSON.parse(event.data)));
      events.onerror = () => {
        events.close();
        this.streams.delete(id);
        const entry = this.jobs.get(id);
        if (entry && !FINAL.has(entry.job.status)) this.poll(id);
      };
    }

    async poll(id) {
      this.streams.set(id, "polling");
      while (this.jobs.has(id)) {
        try {
          const job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
          this.update(job);
          if (FINAL.has(job.status)) break;
        } catch (error) {
          showMessage(`${this.jobs.get(id)?.job.file_name || id}: ${error.message}`);
          break;
        }
        await sleep(POLL_MS);
      }
      this.streams.delete(id);
    }

    update(job) {
      const entry = this.jobs.get(job.id);
      if (!entry) return;
      const before = entry.job.status;
      entry.job = job;
      const element = entry.element;
      const percent = Math.round((job.progress || 0) * 100);
      element.querySelector(".job-status").textContent =
        job.status === "running" ? `running, ${percent}%` : job.status;
      const bar = element.querySelector("progress");
      bar.value = job.progress || 0;
      bar.setAttribute("aria-label", `${job.file_name}: ${percent}%`);
      element.querySelector(".job-error").textContent = job.error || "";
      element.querySelector(".job-open").disabled = !this.playable(job);
      if (job.status === "failed" && before !== "failed" && job.error) {
        showMessage(job.error.includes(job.file_name) ? job.error : `${job.file_name}: ${job.error}`);
      }
      if (this.player && this.player.job.id === job.id) {
        this.player.update(job);
        this.showZip(job);
      }
      const waiting = this.waitingFor === job.id && this.playable(job);
      if (waiting) { this.waitingFor = null; this.open(job.id); }
    }

    playable(job) {
      return job.status !== "failed" && Boolean(job.sample_rate) && Object.keys(job.stems || {}).length > 0;
    }

    /** Opens the player of a job as soon as it has a sample rate and stems. */
    whenPlayable(id) {
      const entry = this.jobs.get(id);
      if (entry && this.playable(entry.job)) this.open(id); else this.waitingFor = id;
    }

    open(id) {
      const entry = this.jobs.get(id);
      if (!entry || !this.playable(entry.job)) return;
      if (this.player) this.player.close();
      for (const other of this.jobs.values()) other.element.classList.toggle("current", other.job.id === id);
      $("player").hidden = false;
      $("player-name").textContent = entry.job.file_name;
      this.player = new Player(entry.job, (line) => showMessage(line));
      this.player.applyGains();
      this.updateDownloads();
      this.showZip(entry.job);
    }

    async remove(id) {
      const entry = this.jobs.get(id);
      if (!entry) return;
      if (this.player && this.player.job.id === id) {  // stop it first: its stems are about to go
        this.player.close();
        this.player = null;
        $("player").hidden = true;
      }
      const response = await request(`/api/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (!response.ok && response.status !== 404) {
        showMessage(`${entry.job.file_name}: ${await errorLine(response)}`);
        return;
      }
      const stream = this.streams.get(id);
      if (stream && stream.close) stream.close();
      this.streams.delete(id);
      this.jobs.delete(id);
      entry.element.remove();
      $("no-jobs").hidden = this.jobs.size > 0;
    }

    showZip(job) {
      const zip = $("zip");
      zip.hidden = !job.zip_url;
      if (job.zip_url) zip.href = withToken(job.zip_url);
    }

    updateDownloads() {
      if (!this.player) return;
      const format = $("format").value;
      for (const track of this.player.tracks) {
        const link = track.element.querySelector(".stem-download");
        link.href = withToken(`${track.url}?format=${format}`);
        link.textContent = `Download ${track.name} (${format.toUpperCase()})`;
      }
    }

    bindPlayer() {
      $("play").addEventListener("click", () => this.player && this.player.togglePlay());
      $("position").addEventListener("input", (event) => this.player && this.player.seek(Number(event.target.value)));
      $("volume").addEventListener("input", (event) => this.player && this.player.setVolume(Number(event.target.value)));
      $("format").addEventListener("change", () => this.updateDownloads());
      document.addEventListener("keydown", (event) => this.key(event));
    }

    /** Space plays or pauses and the arrows seek, unless the focus is on a control that uses those keys. */
    key(event) {
      if (!this.player || event.altKey || event.ctrlKey || event.metaKey) return;
      const target = event.target;
      const own = target.closest && target.closest("button, a, input, select, textarea, label");
      if (event.key === " " && !own) {
        event.preventDefault();
        this.player.togglePlay();
      } else if ((event.key === "ArrowLeft" || event.key === "ArrowRight") && !own) {
        event.preventDefault();
        this.player.seek(this.player.position() + (event.key === "ArrowLeft" ? -SEEK_STEP : SEEK_STEP));
      }
    }
  }

  const page = new Page();
  window.unetSep = {
    /** The player's state (null without one): position, audible stems, levels. For tests and curious users. */
    state: () => (page.player ? page.player.state() : null),
    jobs: () => Array.from(page.jobs.values(), (entry) => entry.job),
  };
  page.start();
})();
