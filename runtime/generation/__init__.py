"""Text generation in numpy: logits processors as transformers applies them, and a
KV-cache decoding loop for decoder-only graphs driven by the manifest's ``generation``
section (never by the architecture's name)."""

from edgeformers.runtime.generation.decoder import DecoderOnlyGenerator, Decoding, GenerationSettings

__all__ = ["Decoding", "DecoderOnlyGenerator", "GenerationSettings"]
