"""The file name extensions taken for audio where files are found rather than named: in input folders and globs,
and among the stem files of a data set's track folders. A file named directly is tried whatever its extension."""

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aif",
    ".aiff", ".aifc", ".wma", ".mka", ".mkv", ".mov", ".au", ".caf", ".w64", ".rf64",
})
