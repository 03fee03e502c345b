"""Build the produced-song test set (issue 26, item 4): MIR-1K's held-out singers over held-out produced
instrumentals, and the instrumentals alone, as a folder data set that ``unet-sep evaluate`` scores.

    python recipes/produced/build_testset.py --mir1k ../shared/data/mir1k --produced data/produced \\
        --out data/produced-testset [--sample-rate 16000] [--seed 0] [--mixtures 120] [--instrumentals 40] \\
        [--excerpt-seconds 10]

For each split (valid: MIR-1K's singers.valid over the produced valid split, for choosing settings; test:
singers.test over the produced test split, for the final report) it writes --mixtures mixtures, each a MIR-1K
clip's vocals (the whole clip, or an excerpt of --excerpt-seconds where the clip is longer) over an excerpt of the
same length of a produced instrumental, at a vocals-to-accompaniment level drawn uniformly from -6 to 0 dB, and
--instrumentals excerpts of --excerpt-seconds of the instrumentals alone, with a silent vocals stem. Everything
drawn (clips, tracks, offsets, levels) follows from --seed: the same command gives the same bytes. The list is
written to <out>/mixtures.json, the groups and splits to <out>/splits.json:

    unet-sep evaluate --model M --stems-dir OUT --split-file OUT/splits.json --split-group mixtures --split test \\
        --out eval/produced
    python recipes/produced/vocals_leakage.py --model M --root OUT --group instrumentals --split test

recipes/produced/README.md says how levels, near-silence and MIR-1K's 8 kHz band are handled.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from unet_sep.atomic import atomic_folder, remove_stale_temporary_folders
from unet_sep.audio.decode import read_audio
from unet_sep.audio.resample import check_sample_rate, resample
from unet_sep.cli.common import option_name, print_error
from unet_sep.data.config import DataConfig
from unet_sep.data.load import list_tracks
from unet_sep.data.tracks import DatasetError, TrackSpec
from unet_sep.dsp.measures import level_db
from unet_sep.errors import ConfigError, SettingError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling script_errors.py
from script_errors import exit_status  # noqa: E402

logger = logging.getLogger("build_testset")

FORMAT = "unet-sep produced-song test set, version 1"  # marks an --out folder this script may replace
SPLITS = ("valid", "test")
MIR1K_GROUP = "singers"  # MIR-1K's split by singer: its valid and test singers are held out from training
LEVEL_RANGE_DB = (-6.0, 0.0)  # vocals against accompaniment, RMS over the excerpt
FRAME_SECONDS = 0.1  # the grid of excerpt offsets, and the frames of the energy envelopes that choose them
WINDOW_FRAMES = 5  # an instrumental excerpt has no near-silent window of 0.5 s (so every 1 s window of museval's
# holds at least 0.5 s of music)
QUIET_BELOW_TRACK_DB = 25.0  # near-silent: a window this far below the track's mean level ...
SILENCE_FLOOR_DBFS = -60.0  # ... or below this absolute level
VOCALS_BELOW_CLIP_DB = 6.0  # a vocals excerpt of a longer clip holds at least the clip's mean level less this
PEAK_LIMIT = 0.98  # both stems of an item are scaled down together where the mixture or a stem would peak above
SUBTYPE = "PCM_24"  # float WAV would carry libsndfile's PEAK chunk, whose time stamp changes the bytes per build
MIXTURES_FILE = "mixtures.json"
SPLIT_FILE = "splits.json"


@dataclass(frozen=True)
class Settings:
    """The checked options."""

    mir1k: Path
    produced: Path
    out: Path
    sample_rate: int
    seed: int
    mixtures: int
    instrumentals: int
    excerpt_seconds: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        """Check every option once; a :class:`SettingError` names the first bad one."""
        return cls(
            mir1k=Path(args.mir1k), produced=Path(args.produced), out=Path(args.out),
            sample_rate=check_sample_rate(_number(args.sample_rate, "sample_rate", int), "sample_rate"),
            seed=_bounded(_number(args.seed, "seed", int), "seed", 0, 2**63 - 1),
            mixtures=_bounded(_number(args.mixtures, "mixtures", int), "mixtures", 1, 100000),
            instrumentals=_bounded(_number(args.instrumentals, "instrumentals", int), "instrumentals", 1, 100000),
            excerpt_seconds=_bounded(_number(args.excerpt_seconds, "excerpt_seconds", float), "excerpt_seconds",
                                     1.0, 60.0),
        )

    def recorded(self) -> dict[str, Any]:
        """The settings as mixtures.json records them (the output folder is not one: builds elsewhere are equal)."""
        return {"mir1k": str(self.mir1k), "produced": str(self.produced), "sample_rate": self.sample_rate,
                "seed": self.seed, "mixtures": self.mixtures, "instrumentals": self.instrumentals,
                "excerpt_seconds": self.excerpt_seconds}


def _number(text: str, setting: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise SettingError(setting, f"must be {'a whole' if kind is int else 'a'} number, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise SettingError(setting, f"must be a finite number, got {text!r}")
    return value


def _bounded(value: Any, setting: str, low: Any, high: Any) -> Any:
    if not low <= value <= high:
        raise SettingError(setting, f"must be from {low} to {high}, got {value}")
    return value


@dataclass
class Source:
    """One decoded input, mono (the mean of its channels): its samples at the output rate, and the mean square of
    each :data:`FRAME_SECONDS` frame at its own rate, from which excerpts are chosen (so the same excerpts are
    chosen whatever the output rate)."""

    name: str
    audio: np.ndarray  # float32 [samples] at the output rate (memory-mapped for produced tracks)
    frame_energy: np.ndarray  # float64 [frames]
    frames_whole: float  # the decoded length in frames (not whole frames only)
    taken: list[tuple[int, int]] = field(default_factory=list)  # frames of the excerpts already cut from it


def decode_source(name: str, path: Path, rate: int) -> Source:
    """Decode a file into a :class:`Source` at ``rate``; :class:`FileError` naming the file."""
    audio, native = read_audio(path)
    mono = audio.mean(axis=0, dtype=np.float32)
    hop = round(FRAME_SECONDS * native)
    frames = len(mono) // hop
    energy = np.mean(np.square(mono[: frames * hop].reshape(frames, hop), dtype=np.float64), axis=1)
    return Source(name, resample(mono[None], native, rate)[0], energy, len(mono) / hop)


def quiet_threshold(energy: np.ndarray) -> float:
    """The mean square below which a window of an instrumental is near-silent."""
    return max(float(np.mean(energy)) * 10 ** (-QUIET_BELOW_TRACK_DB / 10), 10 ** (SILENCE_FLOOR_DBFS / 10))


def instrumental_starts(energy: np.ndarray, frames: int) -> np.ndarray:
    """The start frames of excerpts of ``frames`` frames in which no window of :data:`WINDOW_FRAMES` frames is
    near-silent."""
    if frames < 1 or len(energy) < frames:
        return np.zeros(0, dtype=np.int64)
    width = min(WINDOW_FRAMES, frames)
    windows = np.convolve(energy, np.ones(width) / width, mode="valid")  # the window starting at each frame
    quiet_before = np.concatenate([[0], np.cumsum(windows < quiet_threshold(energy))])
    starts = np.arange(len(energy) - frames + 1)
    last_window = starts + frames - width
    return starts[quiet_before[last_window + 1] == quiet_before[starts]]


def excerpt_starts(track: Source, samples: int, frames: int, rate: int) -> np.ndarray:
    """The start frames of :func:`instrumental_starts` whose excerpt of ``samples`` at ``rate`` ends in the track."""
    starts = instrumental_starts(track.frame_energy, frames)
    return starts[np.round(starts * FRAME_SECONDS * rate).astype(np.int64) + samples <= len(track.audio)]


def vocals_starts(energy: np.ndarray, frames: int) -> np.ndarray:
    """The start frames of excerpts of ``frames`` frames of a clip that hold at least its mean level less
    :data:`VOCALS_BELOW_CLIP_DB` (the loudest excerpt where none does)."""
    means = np.convolve(energy, np.ones(frames) / frames, mode="valid")
    starts = np.flatnonzero(means >= np.mean(energy) * 10 ** (-VOCALS_BELOW_CLIP_DB / 10))
    return starts if len(starts) else np.array([int(np.argmax(means))])


def choose_start(rng: np.random.Generator, starts: np.ndarray, frames: int, taken: list[tuple[int, int]]) -> int:
    """One of ``starts`` at random, among those whose excerpt overlaps no excerpt in ``taken`` where there are
    any; the excerpt joins ``taken``."""
    free = np.ones(len(starts), dtype=bool)
    for begin, end in taken:
        free &= (starts + frames <= begin) | (starts >= end)
    start = int(rng.choice(starts[free] if free.any() else starts))
    taken.append((start, start + frames))
    return start


def cycled_order(rng: np.random.Generator, size: int, count: int) -> list[int]:
    """``count`` indices below ``size``: permutations one after another, so each is used once before any twice."""
    rounds = [rng.permutation(size) for _ in range(-(-count // size))]
    return [int(i) for i in np.concatenate(rounds)[:count]]


def peak_scale(*signals: np.ndarray) -> float:
    """The gain (at most 1) that keeps every signal's peak at or below :data:`PEAK_LIMIT`."""
    peak = max(float(np.max(np.abs(signal))) if signal.size else 0.0 for signal in signals)
    return min(1.0, PEAK_LIMIT / peak) if peak > 0 else 1.0


def write_item(folder: Path, vocals: np.ndarray, accompaniment: np.ndarray, rate: int) -> None:
    """One mono track folder of the data set: vocals.wav and accompaniment.wav."""
    folder.mkdir()
    for stem, audio in (("vocals", vocals), ("accompaniment", accompaniment)):
        sf.write(folder / f"{stem}.wav", np.asarray(audio, dtype=np.float32), rate, subtype=SUBTYPE)


def _db(gain: float) -> float:
    return round(20 * math.log10(gain), 6)


@dataclass
class SplitBuilder:
    """Draws and writes the items of one split."""

    settings: Settings
    split: str
    clips: list[Source]
    tracks: list[Source]
    folder: Path
    progress: Any

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.settings.seed, SPLITS.index(self.split), stream])

    def _accompaniment(self, rng: np.random.Generator, track: Source, samples: int, frames: int,
                       ) -> tuple[np.ndarray, float]:
        """An excerpt of ``samples`` at the output rate with no near-silent half second; its offset in seconds."""
        rate = self.settings.sample_rate
        starts = excerpt_starts(track, samples, frames, rate)
        if not len(starts):  # only where a track's one excerpt ends within a sample of its end
            raise DatasetError(f"{track.name}: no excerpt of {samples} samples without a near-silent half second")
        start = choose_start(rng, starts, frames, track.taken)
        first = round(start * FRAME_SECONDS * rate)
        return np.asarray(track.audio[first : first + samples], dtype=np.float64), round(start * FRAME_SECONDS, 3)

    def _vocals(self, rng: np.random.Generator, clip: Source) -> tuple[np.ndarray, float, int]:
        """The whole clip, or an excerpt of --excerpt-seconds of a longer one; its offset, its length in frames."""
        rate, frames = self.settings.sample_rate, round(self.settings.excerpt_seconds / FRAME_SECONDS)
        if clip.frames_whole <= frames:
            return clip.audio.astype(np.float64), 0.0, math.ceil(clip.frames_whole)
        start = int(rng.choice(vocals_starts(clip.frame_energy, frames)))
        first = round(start * FRAME_SECONDS * rate)
        excerpt = clip.audio[first : first + round(self.settings.excerpt_seconds * rate)]
        return excerpt.astype(np.float64), round(start * FRAME_SECONDS, 3), frames

    def mixtures(self) -> list[dict[str, Any]]:
        """--mixtures items: vocals over an instrumental at a level drawn from :data:`LEVEL_RANGE_DB`."""
        rng, count = self._rng(0), self.settings.mixtures
        clip_order, track_order = cycled_order(rng, len(self.clips), count), cycled_order(rng, len(self.tracks), count)
        items = []
        for index, (clip, track) in enumerate(zip(clip_order, track_order, strict=True)):
            level = float(rng.uniform(*LEVEL_RANGE_DB))
            vocals, clip_offset, frames = self._vocals(rng, self.clips[clip])
            accompaniment, track_offset = self._accompaniment(rng, self.tracks[track], len(vocals), frames)
            vocals_gain = 10 ** ((level - level_db(vocals, accompaniment)) / 20)
            vocals *= vocals_gain
            scale = peak_scale(vocals, accompaniment, vocals + accompaniment)
            name = f"{self.split}-mix-{index:03d}"
            write_item(self.folder / name, vocals * scale, accompaniment * scale, self.settings.sample_rate)
            items.append(self._item(name, "mixtures", track, track_offset, len(vocals), clip=self.clips[clip].name,
                                    clip_offset_seconds=clip_offset, level_db=round(level, 6),
                                    vocals_gain_db=_db(vocals_gain * scale), accompaniment_gain_db=_db(scale)))
            self.progress.update()
        return items

    def instrumentals(self) -> list[dict[str, Any]]:
        """--instrumentals items: an excerpt of --excerpt-seconds of an instrumental, and silent vocals."""
        rng, rate = self._rng(1), self.settings.sample_rate
        samples = round(self.settings.excerpt_seconds * rate)
        frames = round(self.settings.excerpt_seconds / FRAME_SECONDS)
        items = []
        for index, track in enumerate(cycled_order(rng, len(self.tracks), self.settings.instrumentals)):
            accompaniment, track_offset = self._accompaniment(rng, self.tracks[track], samples, frames)
            scale = peak_scale(accompaniment)
            name = f"{self.split}-inst-{index:03d}"
            write_item(self.folder / name, np.zeros(samples), accompaniment * scale, rate)
            items.append(self._item(name, "instrumentals", track, track_offset, samples, clip=None,
                                    clip_offset_seconds=None, level_db=None, vocals_gain_db=None,
                                    accompaniment_gain_db=_db(scale)))
            self.progress.update()
        return items

    def _item(self, name: str, group: str, track: int, offset: float, samples: int, **more: Any) -> dict[str, Any]:
        return {"id": name, "group": group, "split": self.split, "track": self.tracks[track].name,
                "track_offset_seconds": offset, "seconds": round(samples / self.settings.sample_rate, 6),
                "samples": samples, **more}


def split_specs(root: Path, group: str | None, target: str) -> dict[str, list[TrackSpec]]:
    """The tracks of the valid and test splits of a folder data set with a ``splits.json``, each split non-empty
    and the two disjoint; errors name the folder or file."""
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder")
    split_file = root / SPLIT_FILE
    if not split_file.is_file():
        raise ConfigError(f"{split_file}: no such file (the split file of {root})")
    config = DataConfig(kind="folder", root=str(root), targets=[target], split_file=str(split_file),
                        split_group=group)
    specs = {split: list_tracks(config, split) for split in SPLITS}
    shared = sorted({s.name for s in specs["valid"]} & {s.name for s in specs["test"]})
    if shared:
        raise ConfigError(f"{split_file}: {len(shared)} track(s) are in both the valid and the test split "
                          f"(e.g. {shared[0]})")
    return specs


def check_out(out: Path, inputs: Sequence[Path]) -> None:
    """--out may be new, empty, or a test set this script wrote (it is replaced); never an input or inside one."""
    resolved = out.resolve()
    for root in inputs:
        if resolved == root.resolve() or root.resolve() in resolved.parents or resolved in root.resolve().parents:
            raise SettingError("out", f"{out} is or holds the input folder {root}")
    if not out.exists():
        return
    if not out.is_dir():
        raise SettingError("out", f"{out} exists and is not a folder")
    if any(out.iterdir()):
        try:
            written = json.loads((out / MIXTURES_FILE).read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            written = False
        if not written:
            raise SettingError("out", f"{out} exists and is not a test set this script wrote; remove it or choose "
                                      f"another folder")


def load_split(settings: Settings, split: str, clip_specs: list[TrackSpec], track_specs: list[TrackSpec],
               scratch: Path, skipped: dict[str, dict[str, str]]) -> tuple[list[Source], list[Source]]:
    """Decode a split's clips (in memory) and instrumentals (memory-mapped from ``scratch``), leaving out clips
    with silent vocals and instrumentals with no excerpt of --excerpt-seconds that is not near-silent."""
    rate, frames = settings.sample_rate, round(settings.excerpt_seconds / FRAME_SECONDS)
    clips = []
    for spec in tqdm(clip_specs, desc=f"{split}: MIR-1K vocals", unit="clip", disable=None, leave=False):
        clip = decode_source(spec.name, spec.targets["vocals"][0].path, rate)
        if not np.mean(clip.frame_energy) > 10 ** (SILENCE_FLOOR_DBFS / 10):
            skipped["clips"][spec.name] = f"vocals below {SILENCE_FLOOR_DBFS:g} dBFS"
            continue
        clips.append(clip)
    tracks = []
    for spec in tqdm(track_specs, desc=f"{split}: instrumentals", unit="track", disable=None, leave=False):
        track = decode_source(spec.name, spec.targets["accompaniment"][0].path, rate)
        if not len(excerpt_starts(track, round(settings.excerpt_seconds * rate), frames, rate)):
            skipped["tracks"][spec.name] = (f"no excerpt of {settings.excerpt_seconds:g} s without a near-silent "
                                            f"half second")
            logger.warning("%s: %s; left out", spec.targets["accompaniment"][0].path, skipped["tracks"][spec.name])
            continue
        scratch.mkdir(exist_ok=True)
        np.save(scratch / f"{len(tracks)}.npy", track.audio)
        track.audio = np.load(scratch / f"{len(tracks)}.npy", mmap_mode="r")
        tracks.append(track)
    for what, found, root in (("clips with vocals", clips, settings.mir1k),
                              ("instrumentals long and loud enough", tracks, settings.produced)):
        if not found:
            raise DatasetError(f"{root}: the {split} split holds no {what} (see the warnings)")
    return clips, tracks


def build(settings: Settings, specs: dict[str, tuple[list[TrackSpec], list[TrackSpec]]], folder: Path,
          ) -> dict[str, Any]:
    """Write every item, splits.json and mixtures.json into ``folder``; the contents of mixtures.json."""
    skipped: dict[str, dict[str, str]] = {"clips": {}, "tracks": {}}
    items: list[dict[str, Any]] = []
    scratch = folder / ".scratch"
    total = len(SPLITS) * (settings.mixtures + settings.instrumentals)
    with tqdm(total=total, desc="writing", unit="item", disable=None) as progress:
        for split in SPLITS:
            clips, tracks = load_split(settings, split, *specs[split], scratch, skipped)
            builder = SplitBuilder(settings, split, clips, tracks, folder, progress)
            items += builder.mixtures() + builder.instrumentals()
            del clips, tracks, builder  # the memory maps, before their files go
            shutil.rmtree(scratch, ignore_errors=True)
    groups = {group: {split: [i["id"] for i in items if i["group"] == group and i["split"] == split]
                      for split in SPLITS} for group in ("mixtures", "instrumentals")}
    (folder / SPLIT_FILE).write_text(json.dumps(groups, indent=1) + "\n")
    band_limited = settings.sample_rate > 16000
    listing = {
        "format": FORMAT,
        "settings": settings.recorded(),
        "level_db_range": list(LEVEL_RANGE_DB),
        "level": "10 log10 of the vocals' energy over the accompaniment's, over the whole excerpt as written "
                 "(no gating: pauses in the singing count); instrumental excerpts have no near-silent half second",
        "vocals_band_limit_hz": 8000 if band_limited else None,
        "vocals_band": ("MIR-1K is 16 kHz: the vocals hold nothing above 8 kHz, the accompaniment is full-band"
                        if band_limited else "MIR-1K's full band (16 kHz)"),
        "selection": {"frame_seconds": FRAME_SECONDS, "window_seconds": WINDOW_FRAMES * FRAME_SECONDS,
                      "quiet_below_track_db": QUIET_BELOW_TRACK_DB, "silence_floor_dbfs": SILENCE_FLOOR_DBFS,
                      "vocals_below_clip_db": VOCALS_BELOW_CLIP_DB, "peak_limit": PEAK_LIMIT},
        "items": items,
        "skipped": skipped,
    }
    (folder / MIXTURES_FILE).write_text(listing_text(listing))
    return listing


def listing_text(listing: dict[str, Any]) -> str:
    """mixtures.json's text: indented, one line per item."""
    rows = ",\n  ".join(json.dumps(item) for item in listing["items"])
    return json.dumps({**listing, "items": "ITEMS"}, indent=1).replace('"ITEMS"', f"[\n  {rows}\n ]") + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mir1k", required=True, help="MIR-1K folder (<clip>/vocals.*, splits.json)")
    parser.add_argument("--produced", required=True, help="produced instrumentals (<track>/accompaniment.*, "
                                                          "splits.json with valid and test)")
    parser.add_argument("--out", required=True, help="the test set's folder (replaced if this script wrote it)")
    parser.add_argument("--sample-rate", default="16000", help="Hz (default 16000; 44100 for models at that rate)")
    parser.add_argument("--seed", default="0", help="draws every clip, track, offset and level (default 0)")
    parser.add_argument("--mixtures", default="120", help="mixtures per split (default 120)")
    parser.add_argument("--instrumentals", default="40", help="instrumental excerpts per split (default 40)")
    parser.add_argument("--excerpt-seconds", default="10", help="excerpt length in seconds (default 10)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (2: a bad option, 1: bad input data or a failed write)."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    args = parse_args(argv)
    try:
        settings = Settings.from_args(args)
        check_out(settings.out, (settings.mir1k, settings.produced))
    except SettingError as error:
        print_error(f"{option_name(error.setting)}: {error.reason}")
        return 2
    started = time.perf_counter()
    try:
        mir1k, produced = split_specs(settings.mir1k, MIR1K_GROUP, "vocals"), split_specs(settings.produced, None,
                                                                                          "accompaniment")
        remove_stale_temporary_folders(settings.out.resolve().parent)
        with atomic_folder(settings.out) as folder:
            listing = build(settings, {s: (mir1k[s], produced[s]) for s in SPLITS}, folder)
    except BaseException as error:
        status = exit_status(error, settings.out, f"interrupted; nothing was written to {settings.out}")
        if status is None:
            raise
        return status
    _print_summary(settings, listing, time.perf_counter() - started)
    return 0


def _print_summary(settings: Settings, listing: dict[str, Any], seconds: float) -> None:
    items = listing["items"]
    audio = sum(item["seconds"] for item in items)
    counts = ", ".join(f"{split}: {sum(i['split'] == split and i['group'] == 'mixtures' for i in items)} mixtures + "
                       f"{sum(i['split'] == split and i['group'] == 'instrumentals' for i in items)} instrumentals"
                       for split in SPLITS)
    left_out = listing["skipped"]
    print(f"wrote {len(items)} items ({counts}; {audio / 60:.1f} min at {settings.sample_rate} Hz) to "
          f"{settings.out} in {seconds:.1f} s; left out {len(left_out['clips'])} clip(s) and "
          f"{len(left_out['tracks'])} track(s) (listed in {settings.out / MIXTURES_FILE})")


if __name__ == "__main__":
    sys.exit(main())
