"""The pipeline tasks: names and aliases as transformers spells them, and what each needs
from an export."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeformers.models.errors import UnsupportedTaskError


@dataclass(frozen=True)
class TaskSpec:
    """One pipeline task.

    ``export_task`` is optimum's name for the graph to export; ``head`` names the
    transformers model head (``AutoModelFor<head>``) whose checkpoint class must match.
    ``head_classes`` are other class-name endings that carry the same head (a wav2vec2
    audio classifier is saved as ``Wav2Vec2ForSequenceClassification``).
    """

    name: str
    export_task: str
    head: str
    aliases: tuple[str, ...] = ()
    default_checkpoint: str | None = None
    description: str = ""
    head_classes: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "text-classification",
            export_task="text-classification",
            head="SequenceClassification",
            aliases=("sentiment-analysis",),
            default_checkpoint="distilbert/distilbert-base-uncased-finetuned-sst-2-english",
            description="label a text (or text pair) with a class",
        ),
        TaskSpec(
            "feature-extraction",
            export_task="feature-extraction",
            head="",
            aliases=("sentence-similarity", "embeddings"),
            default_checkpoint="sentence-transformers/all-MiniLM-L6-v2",
            description="token hidden states, or pooled sentence embeddings",
        ),
        TaskSpec(
            "zero-shot-classification",
            export_task="text-classification",
            head="SequenceClassification",
            default_checkpoint="cross-encoder/nli-distilroberta-base",
            description="classify against labels chosen at call time (NLI model)",
        ),
        TaskSpec(
            "fill-mask",
            export_task="fill-mask",
            head="MaskedLM",
            default_checkpoint="distilbert/distilroberta-base",
            description="predict the masked token",
        ),
        TaskSpec(
            "token-classification",
            export_task="token-classification",
            head="TokenClassification",
            aliases=("ner",),
            default_checkpoint="dbmdz/bert-large-cased-finetuned-conll03-english",
            description="label each token; group them into entities",
        ),
        TaskSpec(
            "question-answering",
            export_task="question-answering",
            head="QuestionAnswering",
            default_checkpoint="distilbert/distilbert-base-cased-distilled-squad",
            description="extract the answer span from a context",
        ),
        TaskSpec(
            "text-generation",
            export_task="text-generation-with-past",
            head="CausalLM",
            default_checkpoint="openai-community/gpt2",
            description="continue a prompt (decoder-only model, one graph with its KV cache)",
        ),
        TaskSpec(
            "text2text-generation",
            export_task="text2text-generation-with-past",
            head="Seq2SeqLM",
            default_checkpoint="google-t5/t5-base",
            description="generate a text from a text (encoder-decoder: encoder_model + decoder_model_merged)",
        ),
        TaskSpec(
            "summarization",
            export_task="text2text-generation-with-past",
            head="Seq2SeqLM",
            default_checkpoint="sshleifer/distilbart-cnn-12-6",
            description="summarize a document (encoder-decoder)",
        ),
        TaskSpec(
            "translation",
            export_task="text2text-generation-with-past",
            head="Seq2SeqLM",
            aliases=("translation_xx_to_yy",),
            default_checkpoint="google-t5/t5-base",
            description="translate a text; translation_en_to_fr style names pick the languages (encoder-decoder)",
        ),
        TaskSpec(
            "image-classification",
            export_task="image-classification",
            head="ImageClassification",
            default_checkpoint="google/vit-base-patch16-224",
            description="label an image with a class (preprocessing from preprocessor_config.json)",
        ),
        TaskSpec(
            "object-detection",
            export_task="object-detection",
            head="ObjectDetection",
            default_checkpoint="facebook/detr-resnet-50",
            description="boxes, labels and scores of the objects in an image (DETR-style set prediction)",
        ),
        TaskSpec(
            "image-to-text",
            export_task="image-to-text-with-past",
            head="Vision2Seq",
            head_classes=("VisionEncoderDecoderModel",),
            default_checkpoint="nlpconnect/vit-gpt2-image-captioning",
            description="caption an image (VisionEncoderDecoder: encoder_model + decoder_model_merged)",
        ),
        TaskSpec(
            "automatic-speech-recognition",
            export_task="automatic-speech-recognition",
            head="CTC",
            default_checkpoint="facebook/wav2vec2-base-960h",
            description="transcribe speech (CTC models such as wav2vec2; Whisper as an encoder-decoder)",
            head_classes=("ForConditionalGeneration",),  # WhisperForConditionalGeneration
        ),
        TaskSpec(
            "audio-classification",
            export_task="audio-classification",
            head="AudioClassification",
            default_checkpoint="superb/wav2vec2-base-superb-ks",
            description="label a sound clip with a class (keyword spotting, sound events)",
            head_classes=("ForSequenceClassification",),  # Wav2Vec2ForSequenceClassification, Hubert...
        ),
    )
}

_ALIASES: dict[str, str] = {
    alias: spec.name for spec in TASKS.values() for alias in (spec.name, *spec.aliases)
}


#: transformers' ``translation_XX_to_YY`` task names (the languages are arguments).
_TRANSLATION = re.compile(r"translation_[A-Za-z0-9-]{1,20}_to_[A-Za-z0-9-]{1,20}")


def resolve_task(name: str) -> TaskSpec:
    """The task for a name or alias (``"sentiment-analysis"`` -> text-classification,
    ``"translation_en_to_fr"`` -> translation)."""
    if isinstance(name, str) and _TRANSLATION.fullmatch(name):
        return TASKS["translation"]
    try:
        return TASKS[_ALIASES[name]]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_ALIASES))
        raise UnsupportedTaskError(f"unknown task {name!r}; expected one of: {known}") from None
