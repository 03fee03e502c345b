"""What each mask extension above the U-Nets' band (zeros, average, last, capped_average) does on songs a user gives.

    python benchmarks/mask_extension.py                       # every table, 12 MIR-1K clips each
    python benchmarks/mask_extension.py --tables song,edge    # some: song, mir1k, hidden, spleeter, edge, choice
    python benchmarks/mask_extension.py --clips 40            # more MIR-1K clips (181 in the test split)
    python benchmarks/mask_extension.py --tables mir1k --hihat-highpass 4000   # hi-hats the band can see

With the defaults every table takes about 25 minutes on 2 busy cores (mir1k, hidden and choice 5-10 each).

Tables (F: the top of the band the U-Nets see; 8 kHz for the bundled 16 kHz model, 11.025 kHz for Spleeter's
models, 16.5 kHz for its -16kHz variants):

1. song: ../shared/data/mixtures/audio_example.mp3, separated whole. Per passage (its percussion intro, its first
   2 s, which end in a riser, and a sung passage): each stem's energy above F relative to the mixture's there,
   in dB, and the share of the stem's own energy that lies above F.
2. mir1k: MIR-1K singers-test clips at 44.1 kHz (resampled from 16 kHz) with synthetic hi-hats (noise bursts
   high-passed at 8 kHz, 12 dB below the accompaniment) added to the accompaniment. Instrumental: the
   accompaniment alone, whose vocals stem should be silent; sung: the voice at 0 dB against it. Vocals above F
   relative to the mixture above F (median and worst clip), and whole-clip SDR (the package's SNR formula)
   against the true stems, which have nothing above 8 kHz but the hi-hats.
3. hidden: the bundled model told to see only its first F' bins (4 or 6 kHz of its 8) on MIR-1K test clips at
   16 kHz, so the truth above F' is known: museval SDR of each stem over the whole clip, SDR of the band above
   F' alone, and the vocals above F' on the frames where the true voice is silent (below -40 dB). F' = 512 is
   the model as it ships (the modes differ on its one bin at 8 kHz only).
4. spleeter: the random-weight Spleeter-format checkpoints of ../shared/data/spleeter-ref on their reference
   input. Their masks carry no vocals/no-vocals meaning: the table shows the mechanics (each stem's energy above
   F, the stems summing to the mixture), not which mode is right on songs.
5. edge: how the mask of the top modelled bin F-1 differs from the bins below it (a U-Net padding edge), which
   is what "last" copies across everything above F.
6. choice: the candidates for the new mode, on the set-up of table 3 but computed from the masks of each whole
   clip in one pass (no segments, so quicker: all 181 clips by default, a few minutes): the top octave's energy
   share alone, it squared (sharper), its product with the band's mean mask, and the smaller of the two
   (capped_average), each renormalised over stems. Leak: vocals above F' on the frames without voice; carry: SDR
   above F' on the frames with voice (true voice above -10 dB against the mixture), pooled and per clip.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_name  # noqa: E402
from precision import SHARED, mir1k_stems, mir1k_test_clips  # noqa: E402

from unet_sep import ModelConfig, Separator  # noqa: E402
from unet_sep.audio import read_audio  # noqa: E402
from unet_sep.audio.resample import resample  # noqa: E402
from unet_sep.config import MASK_EXTENSIONS  # noqa: E402
from unet_sep.dsp.masks import extension_mask, ratio_masks, top_octave_share  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.dsp.stft import istft, stft  # noqa: E402
from unet_sep.evaluate.score import bss_eval, mix_at_0db  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.train.augment import lowpass, synthetic_hihats  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, resolve_model  # noqa: E402

SONG = SHARED / "mixtures" / "audio_example.mp3"
MIR1K = SHARED / "mir1k"
SPLEETER_REF = SHARED / "spleeter-ref"
RATE = 44100
# Passages of audio_example.mp3 (seconds): percussion hits, then a noise riser from about 1.5 s; singing from 2.2 s.
SONG_PASSAGES = {"intro 0-1.5 s": (0.0, 1.5), "first 2 s": (0.0, 2.0), "sung 2.5-9 s": (2.5, 9.0)}
HIHAT_HIGHPASS_HZ = 8000.0
HIHAT_DB = -12.0  # against the accompaniment's RMS
SILENT_VOICE_DB = -40.0  # a frame whose true voice is this far below the mixture counts as instrumental
MEASURE_FFT = 2048  # STFT of the measurements (not the models')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="song,mir1k,hidden,spleeter,edge,choice")
    p.add_argument("--clips", type=int, default=12, help="MIR-1K singers-test clips, evenly spread (0: all 181)")
    p.add_argument("--choice-clips", type=int, default=0, help="MIR-1K clips of table 6 (0: all 181)")
    p.add_argument("--modes", default=",".join(MASK_EXTENSIONS))
    p.add_argument("--hihat-highpass", type=float, default=HIHAT_HIGHPASS_HZ, metavar="HZ",
                   help="table 2: high-pass the hi-hats here (default: 8000, above the bundled model's band)")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


# ---- measurements ------------------------------------------------------------------------------------------
def band_energy(audio: np.ndarray, rate: int, low_hz: float, start_s: float = 0.0,
                stop_s: float = float("inf")) -> tuple[float, float]:
    """Energy of ``audio [channels, samples]`` above ``low_hz`` and in all, over the STFT frames centred in
    [start_s, stop_s)."""
    hop = MEASURE_FFT // 4
    power = stft(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), MEASURE_FFT, hop).abs() ** 2
    power = power.reshape(-1, *power.shape[-2:]).sum(0).double().numpy()  # [bins, frames]
    centres = (np.arange(power.shape[-1]) * hop - MEASURE_FFT // 2) / rate  # the STFT prepends n_fft zeros
    frames = (centres >= start_s) & (centres < stop_s)
    high = np.fft.rfftfreq(MEASURE_FFT, 1.0 / rate) >= low_hz
    return float(power[high][:, frames].sum()), float(power[:, frames].sum())


def db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-30)))


def highpass_bins(audio: np.ndarray, n_fft: int, hop: int, first_bin: int) -> np.ndarray:
    """``audio [samples]`` with STFT bins below ``first_bin`` removed (the model's STFT)."""
    spec = stft(torch.from_numpy(np.ascontiguousarray(audio[None], dtype=np.float32)), n_fft, hop)
    spec[:, :first_bin] = 0
    return istft(spec, audio.shape[-1], n_fft, hop).numpy()[0]


def whole_sdr(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> dict[str, float]:
    """museval BSSEval v4 SDR over the whole clip (one window), per stem."""
    length = next(iter(references.values())).shape[-1]
    scores = bss_eval(references, estimates, win=length, hop=length)
    return {stem: float(scores[stem]["SDR"][0]) for stem in estimates}


# ---- models ------------------------------------------------------------------------------------------------
def bundled() -> tuple[str, ModelConfig, StemsNet]:
    name = default_model_name()
    config, net = load_model(resolve_model(name))
    return name, config, net


def spleeter_models() -> dict[str, tuple[ModelConfig, StemsNet, np.ndarray]]:
    """The reference checkpoints as converted models, with their reference input ``[channels, samples]``."""
    manifest = json.loads((SPLEETER_REF / "manifest.json").read_text())
    full = np.load(SPLEETER_REF / "input.npy")
    models = {}
    for model, info in manifest["models"].items():
        config, net = spleeter.load_spleeter(SPLEETER_REF / info["checkpoint_dir"], SPLEETER_REF / info["config"],
                                             name=f"spleeter:{model}")
        start, stop = info["input_slice"]
        models[model] = (config, net, np.ascontiguousarray(full[start:stop].T))
    return models


def separators(net: StemsNet, config: ModelConfig, modes: list[str]) -> dict[str, Separator]:
    return {mode: Separator(net, config, device="cpu", mask_extension=mode) for mode in modes}


# ---- tables ------------------------------------------------------------------------------------------------
def song_table(modes: list[str]) -> None:
    audio, rate = read_audio(SONG)
    name, config, net = bundled()
    models = [(f"{name} (F = {config.band_hz / 1000:g} kHz)", config, net)]
    if (SPLEETER_REF / "manifest.json").is_file():
        two, two_net, _ = spleeter_models()["2stems"]
        models.append((f"random-weight spleeter:2stems (F = {two.band_hz / 1000:g} kHz)", two, two_net))
    print(f"\n1. {SONG.name} ({audio.shape[-1] / rate:.1f} s, {rate} Hz, {audio.shape[0]} ch), separated whole: "
          "each stem's energy above F against the mixture's there (dB), and the share of the stem's own energy "
          "above F (%)")
    for label, model_config, model_net in models:
        print(f"\n{label}")
        header = f"{'mode':<16}" + "".join(f"| {p:<30}" for p in SONG_PASSAGES) + "| stems sum to mix"
        print(header + "\n" + f"{'':<16}" + f"| {'vocals':>9}{'own':>7}{'accomp':>9}   " * len(SONG_PASSAGES))
        for mode, separator in separators(model_net, model_config, modes).items():
            stems = separator.separate(audio, rate)
            line = f"{mode:<16}"
            for start, stop in SONG_PASSAGES.values():
                mix_high, _ = band_energy(audio, rate, model_config.band_hz, start, stop)
                (v_high, v_all), (a_high, _) = (band_energy(stems[s], rate, model_config.band_hz, start, stop)
                                                for s in ("vocals", "accompaniment"))
                line += f"| {db(v_high / mix_high):>9.1f}{100 * v_high / v_all:>6.1f}%{db(a_high / mix_high):>9.1f}   "
            line += f"| {snr_db(audio, sum(stems.values())):.0f} dB"
            print(line)


def hihat_mixes(clip: str, seed: int, highpass_hz: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """MIR-1K clip at 44.1 kHz: the accompaniment with hi-hats, and the voice at 0 dB against it (mono)."""
    vocals, accompaniment, rate = mir1k_stems(clip)
    vocals, accompaniment = (resample(x[None], rate, RATE)[0] for x in (vocals, accompaniment))
    hats = synthetic_hihats(np.random.default_rng(seed), accompaniment.shape[-1], RATE, 1)[0]
    hats = hats - lowpass(hats, RATE, highpass_hz)
    hats *= np.sqrt(np.mean(accompaniment**2)) * 10 ** (HIHAT_DB / 20) / max(np.sqrt(np.mean(hats**2)), 1e-12)
    instrumental = (accompaniment + hats).astype(np.float32)
    sources, _ = mix_at_0db({"vocals": vocals, "accompaniment": instrumental})
    return instrumental, sources


def mir1k_table(modes: list[str], count: int, highpass_hz: float) -> None:
    clips = mir1k_test_clips(count)
    name, config, net = bundled()
    models = [(name, config, net)]
    if (SPLEETER_REF / "manifest.json").is_file():
        two, two_net, _ = spleeter_models()["2stems"]
        models.append(("random-weight spleeter:2stems", two, two_net))
    print(f"\n2. MIR-1K singers-test, {len(clips)} clips at {RATE} Hz with hi-hats (high-passed at "
          f"{highpass_hz / 1000:g} kHz, {HIHAT_DB:g} dB): vocals stem above F against the mixture above F "
          "(dB; median, worst clip), and whole-clip SDR (dB, mean) on the sung mixes")
    for label, model_config, model_net in models:
        seps = separators(model_net, model_config, modes)
        columns = ("inst", "sung", "sdr_v", "sdr_a")
        rows: dict[str, dict[str, list[float]]] = {m: {k: [] for k in columns} for m in modes}
        for index, clip in enumerate(clips):
            instrumental, sources = hihat_mixes(clip, index, highpass_hz)
            mixture = sources["vocals"] + sources["accompaniment"]
            for mode, separator in seps.items():
                stems = separator.separate(instrumental, RATE)
                rows[mode]["inst"].append(db(band_energy(stems["vocals"][None], RATE, model_config.band_hz)[0]
                                             / band_energy(instrumental[None], RATE, model_config.band_hz)[0]))
                stems = separator.separate(mixture, RATE)
                rows[mode]["sung"].append(db(band_energy(stems["vocals"][None], RATE, model_config.band_hz)[0]
                                             / band_energy(mixture[None], RATE, model_config.band_hz)[0]))
                rows[mode]["sdr_v"].append(snr_db(sources["vocals"], stems["vocals"]))
                rows[mode]["sdr_a"].append(snr_db(sources["accompaniment"], stems["accompaniment"]))
        print(f"\n{label} (F = {model_config.band_hz / 1000:g} kHz)")
        print(f"{'mode':<16}{'instr. median':>14}{'worst':>8}{'sung median':>13}{'worst':>8}"
              f"{'SDR vocals':>12}{'SDR accomp':>12}")
        for mode in modes:
            r = rows[mode]
            print(f"{mode:<16}{np.median(r['inst']):>14.1f}{np.max(r['inst']):>8.1f}{np.median(r['sung']):>13.1f}"
                  f"{np.max(r['sung']):>8.1f}{np.mean(r['sdr_v']):>12.2f}{np.mean(r['sdr_a']):>12.2f}")


def hidden_band_rows(config: ModelConfig, net: StemsNet, bins: int, modes: list[str],
                     clips: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per mode, per clip: museval SDR per stem, SDR above the first ``bins`` bins, and the instrumental frames'
    vocals above them (numerator and denominator of the energy ratio)."""
    narrowed = dataclasses.replace(config, frequency_bins=bins)
    seps = separators(net, narrowed, modes)
    n_fft, hop = config.stft.n_fft, config.stft.hop_length
    rows: dict[str, dict[str, list[float]]] = {m: {k: [] for k in ("v", "a", "vh", "ah", "leak", "mix")}
                                               for m in modes}
    for clip in clips:
        vocals, accompaniment, rate = mir1k_stems(clip)
        sources, _ = mix_at_0db({"vocals": vocals, "accompaniment": accompaniment})
        mixture = sources["vocals"] + sources["accompaniment"]
        high_refs = {s: highpass_bins(x, n_fft, hop, bins) for s, x in sources.items()}
        voice = stft(torch.from_numpy(sources["vocals"][None]), n_fft, hop)[0].abs().square().sum(0)
        mix_spec = stft(torch.from_numpy(mixture[None]), n_fft, hop)[0]
        silent = (voice < 10 ** (SILENT_VOICE_DB / 10) * mix_spec.abs().square().sum(0)).numpy()
        mix_high = mix_spec[bins:].abs().square().sum(0).numpy()
        for mode, separator in seps.items():
            stems = separator.separate(mixture, rate)
            for stem, score in whole_sdr(sources, stems).items():
                rows[mode][stem[0]].append(score)
                rows[mode][stem[0] + "h"].append(snr_db(high_refs[stem], highpass_bins(stems[stem], n_fft, hop, bins),
                                                        eps=1e-9))
            vocal_high = stft(torch.from_numpy(stems["vocals"][None]), n_fft, hop)[0, bins:].abs().square().sum(0)
            rows[mode]["leak"].append(float(vocal_high.numpy()[silent].sum()))
            rows[mode]["mix"].append(float(mix_high[silent].sum()))
    return rows


def hidden_table(modes: list[str], count: int) -> None:
    clips = mir1k_test_clips(count)
    name, config, net = bundled()
    bin_hz = config.sample_rate / config.stft.n_fft
    print(f"\n3. {name} seeing only its first F' bins, MIR-1K singers-test, {len(clips)} clips at "
          f"{config.sample_rate} Hz, 0 dB mixes: museval whole-clip SDR (dB, mean), SDR of the band above F' alone, "
          f"and vocals above F' on the frames without voice against the mixture there (dB)")
    print("F'".ljust(10) + f"{'mode':<16}{'SDR voc':>9}{'SDR acc':>9}" + ">F' voc".rjust(9) + ">F' acc".rjust(9)
          + f"{'leak':>8}")
    for bins in (256, 384, config.frequency_bins):
        rows = hidden_band_rows(config, net, bins, modes, clips)
        for mode in modes:
            r = rows[mode]
            line = f"{f'{bins * bin_hz / 1000:g} kHz':<10}{mode:<16}{np.mean(r['v']):>9.2f}{np.mean(r['a']):>9.2f}"
            if bins < config.frequency_bins:  # as the model ships, above F is the one bin at 8 kHz
                line += f"{np.mean(r['vh']):>9.2f}{np.mean(r['ah']):>9.2f}{db(sum(r['leak']) / sum(r['mix'])):>8.1f}"
            print(line)


def spleeter_table(modes: list[str]) -> None:
    print("\n4. random-weight Spleeter-format checkpoints (../shared/data/spleeter-ref) on their reference input: "
          "each stem's energy above F against the mixture's there (dB), stems summed against the mixture (dB)")
    for model, (config, net, audio) in spleeter_models().items():
        mix_high, _ = band_energy(audio, RATE, config.band_hz)
        print(f"\n{model} (F = {config.band_hz / 1000:g} kHz, {audio.shape[-1] / RATE:.1f} s)")
        print(f"{'mode':<16}" + "".join(f"{s:>15}" for s in config.stems) + f"{'sum':>8}")
        for mode, separator in separators(net, config, modes).items():
            stems = separator.separate(audio, RATE)
            print(f"{mode:<16}" + "".join(f"{db(band_energy(stems[s], RATE, config.band_hz)[0] / mix_high):>15.1f}"
                                          for s in config.stems) + f"{snr_db(audio, sum(stems.values())):>8.0f}")


def model_masks(config: ModelConfig, net: StemsNet, audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Ratio masks ``[S, C, F, frames]`` of the whole signal in one pass (no segments) and its STFT."""
    spec = stft(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), config.stft.n_fft,
                config.stft.hop_length)
    frames = spec.shape[-1]
    multiple = 2 ** config.unet.depth
    magnitude = torch.nn.functional.pad(spec[:, : config.frequency_bins].abs(), (0, -frames % multiple))
    with torch.no_grad():
        estimates = net(magnitude.transpose(-1, -2)[None])[:, 0]  # [S, C, T, F]
    masks = ratio_masks(estimates, config.separation_exponent)[..., :frames, :].transpose(-1, -2)
    return masks, spec


def edge_table(modes: list[str]) -> None:
    del modes
    print("\n5. the top modelled bin: mean |mask(F-1) - mask(F-2)| against the median of that step between "
          "neighbouring bins below, and the vocals mask where it goes above F (mean over frames)")
    print(f"{'model':<36}{'input':<26}{'edge step':>10}{'inner':>8}{'last':>8}{'average':>9}{'capped_average':>15}")
    name, config, net = bundled()
    audio, rate = read_audio(SONG)
    intro = resample(audio[:, : int(SONG_PASSAGES["intro 0-1.5 s"][1] * rate)], rate, config.sample_rate)
    cases: list[tuple[str, str, ModelConfig, StemsNet, np.ndarray]] = [
        (name, "song intro, mono mix", config, net, intro.mean(0, keepdims=True))]
    if (MIR1K / "splits.json").is_file():
        clip = mir1k_test_clips(1)[0]
        cases.append((name, f"{clip} accompaniment", config, net, mir1k_stems(clip)[1][None]))
    if (SPLEETER_REF / "manifest.json").is_file():
        cases += [(f"random-weight spleeter:{m}", "reference input", c, n, a)
                  for m, (c, n, a) in spleeter_models().items()]
    for label, input_name, model_config, model_net, signal in cases:
        masks, spec = model_masks(model_config, model_net, signal)
        steps = (masks[..., 1:, :] - masks[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # [F - 1]
        vocals = {mode: float(extension_mask(masks, mode, spec)[0].mean())
                  for mode in ("last", "average", "capped_average")}
        print(f"{label:<36}{input_name:<26}{float(steps[-1]):>10.3f}{float(steps[:-1].median()):>8.3f}"
              f"{vocals['last']:>8.3f}{vocals['average']:>9.3f}{vocals['capped_average']:>15.3f}")


def _renormalised(shares: torch.Tensor) -> torch.Tensor:
    return shares / shares.sum(dim=0, keepdim=True)


CANDIDATES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "average": lambda masks, spec: extension_mask(masks, "average", spec),
    "last": lambda masks, spec: extension_mask(masks, "last", spec),
    "top-octave share": top_octave_share,
    "share squared": lambda masks, spec: _renormalised(top_octave_share(masks, spec) ** 2),
    "average x share": lambda masks, spec: _renormalised(masks.mean(-2) * top_octave_share(masks, spec)),
    "capped_average": lambda masks, spec: extension_mask(masks, "capped_average", spec),
}


def candidate_scores(config: ModelConfig, net: StemsNet, bins: int, clip: str) -> dict[str, list[float]]:
    """Per candidate, for one clip with the model seeing ``bins`` bins: the vocals' energy above them on the frames
    without voice and the mixture's there, the true voice's energy above them on the frames with voice and the
    error's there."""
    vocals, accompaniment, _ = mir1k_stems(clip)
    sources, _ = mix_at_0db({"vocals": vocals, "accompaniment": accompaniment})
    mixture = (sources["vocals"] + sources["accompaniment"])[None]
    masks, spec = model_masks(dataclasses.replace(config, frequency_bins=bins), net, mixture)
    voice = stft(torch.from_numpy(sources["vocals"][None]), config.stft.n_fft, config.stft.hop_length)[0]
    mix_power = spec[0].abs().square().sum(0)
    silent = voice.abs().square().sum(0) < 10 ** (SILENT_VOICE_DB / 10) * mix_power
    sung = voice.abs().square().sum(0) > 0.1 * mix_power
    high_mix, high_voice = spec[0, bins:], voice[bins:]
    high_power = high_mix.abs().square().sum(0)
    scores = {}
    for candidate, rule in CANDIDATES.items():
        weight = rule(masks, spec)[0, 0]  # vocals, [frames]
        error = (weight * high_mix - high_voice).abs().square().sum(0)
        scores[candidate] = [float((weight**2 * high_power)[silent].sum()), float(high_power[silent].sum()),
                             float(high_voice.abs().square().sum(0)[sung].sum()), float(error[sung].sum())]
    return scores


def choice_table(count: int) -> None:
    clips = mir1k_test_clips(count)
    name, config, net = bundled()
    bin_hz = config.sample_rate / config.stft.n_fft
    print(f"\n6. candidates for the new mode: {name} seeing only its first F' bins, MIR-1K singers-test, {len(clips)} "
          "clips, 0 dB mixes, masks of each whole clip in one pass. Leak: vocals above F' on the frames without voice "
          "against the mixture there, all clips pooled (dB); carry: SDR above F' on the frames with voice, pooled "
          "(dB); per clip against average: the median difference of that SDR (dB) and the clips where it is higher")
    print("F'".ljust(8) + f"{'candidate':<22}{'leak':>8}{'carry':>8}{'per clip vs average':>22}")
    for bins in (256, 384):
        per_clip = [candidate_scores(config, net, bins, clip) for clip in clips]
        carry = {c: np.array([db(s[c][2] / s[c][3]) for s in per_clip]) for c in CANDIDATES}
        for candidate in CANDIDATES:
            pooled = np.sum([s[candidate] for s in per_clip], axis=0)
            gain = carry[candidate] - carry["average"]
            print(f"{f'{bins * bin_hz / 1000:g} kHz':<8}{candidate:<22}{db(pooled[0] / pooled[1]):>8.1f}"
                  f"{db(pooled[2] / pooled[3]):>8.2f}{np.median(gain):>+12.2f} dB{100 * np.mean(gain > 0):>6.0f} %")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    tables = {"song": lambda: song_table(modes), "mir1k": lambda: mir1k_table(modes, args.clips, args.hihat_highpass),
              "hidden": lambda: hidden_table(modes, args.clips), "spleeter": lambda: spleeter_table(modes),
              "edge": lambda: edge_table(modes), "choice": lambda: choice_table(args.choice_clips)}
    needs = {"song": SONG, "mir1k": MIR1K / "splits.json", "hidden": MIR1K / "splits.json",
             "spleeter": SPLEETER_REF / "manifest.json", "edge": SONG, "choice": MIR1K / "splits.json"}
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for table in args.tables.split(","):
        if not needs[table].exists():
            print(f"\n{table}: {needs[table]} not found, skipped")
            continue
        start = time.perf_counter()
        tables[table]()
        print(f"({table}: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
