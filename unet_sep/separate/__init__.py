"""From waveforms to stems: segmenting, the streaming engine, the channel policy and the Separator."""
