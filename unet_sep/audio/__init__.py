"""Audio in and out: decoding (soundfile, PyAV), resampling (soxr) and atomic encoding."""

from unet_sep.audio.decode import AudioDecodeError, AudioInfo, AudioReader, open_audio, read_audio
from unet_sep.audio.encode import OUTPUT_FORMATS, AtomicAudioWriter, AudioEncodeError
from unet_sep.audio.resample import StreamResampler, resample

__all__ = [
    "AtomicAudioWriter",
    "AudioDecodeError",
    "AudioEncodeError",
    "AudioInfo",
    "AudioReader",
    "OUTPUT_FORMATS",
    "StreamResampler",
    "open_audio",
    "read_audio",
    "resample",
]
