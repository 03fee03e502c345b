"""Signal processing steps: STFT / iSTFT and masks."""
