"""PortAudio through ``sounddevice`` (the ``live`` extra): the module, and a device named by number or name checked
once, where it enters."""

from __future__ import annotations

from types import ModuleType

from unet_sep.errors import SettingError
from unet_sep.extras import import_extra


def sounddevice_module(setting: str) -> ModuleType:
    """``sounddevice``, or a one-line :class:`~unet_sep.extras.MissingExtraError` naming the ``live`` extra; a
    missing PortAudio library is a :class:`SettingError` of ``setting``."""
    try:
        return import_extra("sounddevice", "live", "a sound device")
    except OSError as error:  # sounddevice is there, the PortAudio library is not
        raise SettingError(setting, f"a sound device needs the PortAudio library: {error}") from None


def device_id(spelled: str) -> int | str:
    """A device as PortAudio takes it: a number (its index in ``python -m sounddevice``) or a part of its name."""
    return int(spelled) if spelled.strip().isdigit() else spelled


def check_device(spelled: str, kind: str, setting: str) -> dict:
    """The device's description (``sounddevice.query_devices``) if ``spelled`` names one with ``kind`` (input or
    output) channels; else :class:`SettingError` naming ``setting``."""
    sd = sounddevice_module(setting)
    try:
        return dict(sd.query_devices(device_id(spelled), kind))
    except (ValueError, sd.PortAudioError) as error:
        raise SettingError(setting, f"no {kind} sound device {spelled!r}: {' '.join(str(error).split())} (list them "
                                    "with python -m sounddevice)") from None
