"""Task -> pipeline class, imported only when that task is asked for."""

from __future__ import annotations

import importlib

from edgeformers.models.errors import UnsupportedTaskError

# canonical task name -> "module:Class" inside this package
PIPELINES: dict[str, str] = {
    "text-classification": "text_classification:TextClassificationPipeline",
    "feature-extraction": "feature_extraction:FeatureExtractionPipeline",
    "question-answering": "question_answering:QuestionAnsweringPipeline",
    "token-classification": "token_classification:TokenClassificationPipeline",
    "zero-shot-classification": "zero_shot:ZeroShotClassificationPipeline",
    "fill-mask": "fill_mask:FillMaskPipeline",
    "text-generation": "text_generation:TextGenerationPipeline",
    "image-classification": "image_classification:ImageClassificationPipeline",
    "object-detection": "object_detection:ObjectDetectionPipeline",
    "image-to-text": "image_to_text:ImageToTextPipeline",
    "text2text-generation": "text2text:Text2TextGenerationPipeline",
    "summarization": "text2text:SummarizationPipeline",
    "translation": "text2text:TranslationPipeline",
    # CTC here; encoder-decoder (Whisper) bundles are handed to whisper:WhisperPipeline when made
    "automatic-speech-recognition": "speech_recognition:SpeechRecognitionPipeline",
    "audio-classification": "audio_classification:AudioClassificationPipeline",
}


def pipeline_class(task: str) -> type:
    try:
        target = PIPELINES[task]
    except KeyError:
        raise UnsupportedTaskError(
            f"the runtime has no pipeline for {task!r} yet; it runs: {', '.join(sorted(PIPELINES))}"
        ) from None
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)
