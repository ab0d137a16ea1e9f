"""Text generation in numpy: logits processors as transformers applies them, search
algorithms (greedy, sampling, beam search) over a model-specific :class:`Stepper`, and
the KV-cache stepper for decoder-only graphs driven by the manifest's ``generation``
section (never by the architecture's name)."""

from edgeformers.runtime.generation.beams import BeamSearch, beam_search
from edgeformers.runtime.generation.decoder import DecoderOnlyGenerator
from edgeformers.runtime.generation.search import Decoding
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.stepper import DecoderLayout, DecoderOnlyStepper, Stepper

__all__ = ["BeamSearch", "DecoderLayout", "DecoderOnlyGenerator", "DecoderOnlyStepper", "Decoding", "GenerationSettings", "Stepper",
           "beam_search"]
