"""What ``unet-sep serve`` is asked (:class:`ServeConfig`), checked when made, and the separation settings a job may
choose (:func:`job_settings`), checked where they enter: at upload."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from unet_sep.errors import SettingError
from unet_sep.separate.settings import SeparationSettings

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 500.0
DEFAULT_MAX_QUEUED = 32
TOKEN_ENV = "UNET_SEP_TOKEN"  # the environment variable that gives --token

# The settings of SeparationSettings a job may set (the rest belong to the server: device, precision, batching).
JOB_SEPARATION_FIELDS = ("segmentation", "overlap", "mask_extension", "wiener_iterations", "wiener_window")
# A job's form fields: the stems to write, and the separation settings above.
JOB_FIELDS = ("stems", "two_stems", *JOB_SEPARATION_FIELDS)
_FIELD_TYPES = {"segmentation": str, "overlap": float, "mask_extension": str, "wiener_iterations": int,
                "wiener_window": int}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeConfig:
    """The server's settings (see ``unet-sep serve --help``).

    ``data_dir`` holds the job database and the per-job folders (None: the user's data folder, from platformdirs).
    ``max_upload_mb``: the largest upload (413 beyond). ``max_queued``: jobs waiting at most (429 beyond).
    ``token``: every API request must carry it (``Authorization: Bearer <token>`` or ``?token=``); required for a
    host that is not loopback. ``cors_origins``: origins allowed to call the API from a browser (none: CORS off).
    ``separation``: the server's separation settings (device, batch size, ...); a job may change
    :data:`JOB_SEPARATION_FIELDS`. ``threads``: torch's CPU threads (None: torch's default).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model: str | None = None
    data_dir: Path | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_queued: int = DEFAULT_MAX_QUEUED
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    separation: SeparationSettings = field(default_factory=SeparationSettings)
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise SettingError("port", f"must be from 1 to 65535, got {self.port!r}")
        if not (isinstance(self.max_upload_mb, (int, float)) and math.isfinite(self.max_upload_mb)
                and self.max_upload_mb > 0):
            raise SettingError("max_upload_mb", f"must be a number of megabytes > 0, got {self.max_upload_mb!r}")
        if isinstance(self.max_queued, bool) or not isinstance(self.max_queued, int) or self.max_queued < 1:
            raise SettingError("max_queued", f"must be a whole number >= 1, got {self.max_queued!r}")
        if self.token is not None and not self.token.strip():
            raise SettingError("token", "must not be empty")
        if self.token is None and not is_loopback(self.host):
            raise SettingError("token", f"binding {self.host}, which other machines can reach, needs a token "
                                        f"(--token or {TOKEN_ENV}); or bind 127.0.0.1")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def data_folder(self) -> Path:
        """``data_dir``, or the user's data folder for unet-sep (platformdirs)."""
        if self.data_dir is not None:
            return self.data_dir
        import platformdirs

        return Path(platformdirs.user_data_dir("unet-sep")) / "serve"


def job_settings(form: Mapping[str, str]) -> dict[str, object]:
    """A job's settings from its form fields (:data:`JOB_FIELDS`; empty values are left out): ``stems`` as a list,
    the numbers as numbers. Raises :class:`SettingError` naming the field for an unknown field or a value that is
    not of its type; the values themselves are checked by :func:`separation_for`."""
    settings: dict[str, object] = {}
    for name, value in form.items():
        if name not in JOB_FIELDS:
            raise SettingError(name, f"unknown setting; a job takes {', '.join(JOB_FIELDS)}")
        text = str(value).strip()
        if not text:
            continue
        if name == "stems":
            settings[name] = [stem.strip() for stem in text.split(",") if stem.strip()]
        elif name == "two_stems":
            settings[name] = text
        else:
            kind = _FIELD_TYPES[name]
            try:
                settings[name] = kind(text)
            except ValueError:
                raise SettingError(name, f"must be {'a whole number' if kind is int else 'a number'}, got "
                                         f"{text!r}") from None
    return settings


def settings_used(server: SeparationSettings, settings: Mapping[str, object], stems: list[str]) -> dict[str, object]:
    """A job's settings as it runs them: its own, the server's for the rest (None: the model's own), and the stems
    it writes."""
    used: dict[str, object] = {"stems": list(stems), "two_stems": settings.get("two_stems")}
    used.update({name: settings.get(name, getattr(server, name)) for name in JOB_SEPARATION_FIELDS})
    return used


def separation_for(server: SeparationSettings, settings: Mapping[str, object]) -> SeparationSettings:
    """The server's separation settings with a job's (:data:`JOB_SEPARATION_FIELDS`) put in; checked when made
    (:class:`SettingError`)."""
    chosen = {name: settings[name] for name in JOB_SEPARATION_FIELDS if name in settings}
    return dataclasses.replace(server, **chosen)  # type: ignore[arg-type]
