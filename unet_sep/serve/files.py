"""The files of a job: the upload, written whole under the job's folder and probed as ``unet-sep separate`` opens
a file; the stems in another format, made on request; the zip of a finished job's stems. Every name here is the
server's own; a user's file name is only shown."""

from __future__ import annotations

import re
import threading
import zipfile
from pathlib import Path
from typing import BinaryIO

from unet_sep.atomic import atomic_path
from unet_sep.errors import FileError, printable
from unet_sep.serve.partial import stem_path

_SAFE_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_MAX_NAME = 255
ENCODED_FORMATS = ("wav", "flac", "mp3")
ZIP_FILE = "stems.zip"
COPY_CHUNK = 1 << 20  # bytes copied at once
ENCODE_BLOCK = 1 << 16  # samples per channel encoded at once
_encoding = threading.Lock()  # one encode of a stem at a time (a second request for it then finds it made)


class UploadError(Exception):
    """An upload that cannot become a job: ``message`` is the one line answered with 422."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def shown_name(file_name: str | None) -> str:
    """The uploaded file's name as shown: its last path part (a browser may send a whole path), on one line, at
    most 255 characters; ``upload`` where it has none."""
    name = re.split(r"[/\\]", file_name or "")[-1].strip()
    return printable(name)[:_MAX_NAME] or "upload"


def input_name(file_name: str) -> str:
    """The upload's name in the job folder: ``input`` and the file's extension where it is a plain one (the
    decoders may go by it), else ``input``."""
    suffix = Path(file_name).suffix
    return "input" + (suffix.lower() if _SAFE_EXTENSION.match(suffix) else "")


def save_upload(source: BinaryIO, target: Path) -> int:
    """Copy the upload to ``target`` (whole or not at all); its size in bytes."""
    size = 0
    with atomic_path(target) as temporary, temporary.open("wb") as handle:
        while chunk := source.read(COPY_CHUNK):
            handle.write(chunk)
            size += len(chunk)
    return size


def probe_upload(path: Path, file_name: str):
    """The upload's :class:`~unet_sep.audio.decode.AudioInfo`, as the separation will open it; an
    :class:`UploadError` with the CLI's line (the file's name and the reason) where it is not audio, is empty or
    is truncated."""
    from unet_sep.audio.decode import open_audio

    try:
        return open_audio(path).info
    except FileError as error:
        raise UploadError(f"{file_name}: {error.reason}") from None


def encoded_stem(folder: Path, stem: str, fmt: str) -> Path:
    """A finished stem in ``fmt`` (wav, flac or mp3): the WAV itself, or its encoding, made on the first request
    and kept beside it."""
    wav = stem_path(folder, stem)
    if fmt == "wav":
        return wav
    target = stem_path(folder, stem, fmt)
    with _encoding:
        if not target.is_file():
            _encode(wav, target, fmt)
    return target


def _encode(wav: Path, target: Path, fmt: str) -> None:
    """``wav`` encoded as ``fmt``; FLAC (24-bit) scaled by ``--clip-mode rescale``'s one gain where the stem
    goes beyond full scale, as ``unet-sep separate --format flac`` would."""
    import numpy as np
    import soundfile as sf

    from unet_sep.audio.encode import AtomicAudioWriter, default_bit_depth, holds_beyond_full_scale, rescale_gain

    depth = default_bit_depth(fmt, "FLOAT")
    with sf.SoundFile(str(wav)) as source:
        gain = np.float32(1.0)
        if not holds_beyond_full_scale(fmt, depth):
            peak = max((float(np.abs(block).max(initial=0.0)) for block in
                        source.blocks(blocksize=ENCODE_BLOCK, dtype="float32", always_2d=True)), default=0.0)
            gain = np.float32(rescale_gain(peak))
            source.seek(0)
        writer = AtomicAudioWriter(target, source.samplerate, source.channels, fmt, depth)
        try:
            for block in source.blocks(blocksize=ENCODE_BLOCK, dtype="float32", always_2d=True):
                writer.write(block.T * gain)
            writer.commit()
        except BaseException:
            writer.abort()
            raise


def stems_zip(folder: Path, stems: list[str]) -> Path:
    """The zip of a finished job's stems (``<stem>.wav`` each, stored), made on the first request."""
    target = folder / ZIP_FILE
    with _encoding:
        if not target.is_file():
            with atomic_path(target) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
                for stem in stems:
                    archive.write(stem_path(folder, stem), f"{stem}.wav")
    return target

