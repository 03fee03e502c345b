"""From waveforms to stems: segmenting, the streaming engine, the channel policy, the network runner, the
Separator (the public API) and the pipeline for many files."""
