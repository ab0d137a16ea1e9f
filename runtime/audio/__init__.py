"""Audio for the runtime in numpy: decoding (``io``), resampling (``resample``) and model
features (``features``), so speech and audio pipelines need no torch, librosa or ffmpeg."""
