"""The pipeline tasks: names and aliases as transformers spells them, and what each needs
from an export."""

from __future__ import annotations

from dataclasses import dataclass

from edgeformers.models.errors import UnsupportedTaskError


@dataclass(frozen=True)
class TaskSpec:
    """One pipeline task.

    ``export_task`` is optimum's name for the graph to export; ``head`` names the
    transformers model head (``AutoModelFor<head>``) whose checkpoint class must match.
    """

    name: str
    export_task: str
    head: str
    aliases: tuple[str, ...] = ()
    default_checkpoint: str | None = None
    description: str = ""


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
    )
}

_ALIASES: dict[str, str] = {
    alias: spec.name for spec in TASKS.values() for alias in (spec.name, *spec.aliases)
}


def resolve_task(name: str) -> TaskSpec:
    """The task for a name or alias (``"sentiment-analysis"`` -> text-classification)."""
    try:
        return TASKS[_ALIASES[name]]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_ALIASES))
        raise UnsupportedTaskError(f"unknown task {name!r}; expected one of: {known}") from None
