"""Live separation around a :class:`~unet_sep.separate.live.LiveSession`: where the samples come from
(:mod:`~unet_sep.live.sources`: a file at its real pace, standard input, a sound device), where the stems go
(:mod:`~unet_sep.live.sinks`: standard output, files, sound devices) and the loop between them
(:mod:`~unet_sep.live.loop`), which watches that compute keeps up with real-time sources."""
