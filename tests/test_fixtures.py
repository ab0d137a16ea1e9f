"""Self-check of the test fixtures: every tiny checkpoint loads in the matching
transformers pipeline, and the tokenizers cover the corpus' unicode. Parity tests
elsewhere trust these folders to look like real Hub checkpoints."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.fixtures.checkpoints import (  # noqa: E402
    DEFAULT_LABELS,
    ENCODER_ARCHS,
    ENCODER_HEADS,
    build_checkpoint,
    build_tokenizer,
)
from tests.fixtures.corpus import (  # noqa: E402
    CORPUS,
    NER_SAMPLES,
    UNICODE_SAMPLES,
    generated_sentences,
)

KINDS = ["wordpiece", "bpe", "unigram"]
TASK_FOR_HEAD = {
    "base": "feature-extraction",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "masked-lm": "fill-mask",
}
NLI_LABELS = ["contradiction", "neutral", "entailment"]
SAMPLES = UNICODE_SAMPLES + NER_SAMPLES
# Characters a normalizer may legitimately drop (BERT strips combining marks such as U+FE0F).
_DROPPABLE = {"Mn", "Cf", "Cc"}

Factory = Callable[..., Path]


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="module", params=KINDS)
def tokenizer(request: pytest.FixtureRequest, tokenizers_dir: Path) -> transformers.PreTrainedTokenizerFast:
    """Each kind saved under tokenizers_dir/<kind>."""
    return build_tokenizer(request.param, tokenizers_dir / request.param, model_max_length=64)


def test_corpus_is_deterministic_and_covers_samples() -> None:
    assert generated_sentences() == generated_sentences()
    assert 200 <= len(CORPUS) <= 1000
    assert set(SAMPLES) <= set(CORPUS)


def test_tokenizer_folder_reloads(
    tokenizer: transformers.PreTrainedTokenizerFast, tokenizers_dir: Path, request: pytest.FixtureRequest
) -> None:
    folder = tokenizers_dir / request.node.callspec.params["tokenizer"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder / name).is_file()
    reloaded = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(reloaded) is type(tokenizer) and reloaded.model_max_length == 64
    assert 300 <= len(reloaded) <= 1000
    assert reloaded(SAMPLES[0])["input_ids"] == tokenizer(SAMPLES[0])["input_ids"]


def test_no_unknown_tokens_and_round_trip(tokenizer: transformers.PreTrainedTokenizerFast) -> None:
    normalizer = tokenizer.backend_tokenizer.normalizer
    for text in SAMPLES:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, (text, tokenizer.convert_ids_to_tokens(ids))
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        expected = normalizer.normalize_str(text) if normalizer else text
        # WordPiece's decoder puts spaces around punctuation and CJK; compare without them.
        assert "".join(decoded.split()) == "".join(expected.split()), text


def test_offsets_cover_every_character(tokenizer: transformers.PreTrainedTokenizerFast) -> None:
    for text in SAMPLES:
        enc = tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        covered: set[int] = set()
        for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
            if special:
                assert (start, end) == (0, 0)
                continue
            # <= not <: RoBERTa's trim_offsets leaves a lone "Ġ" token with an empty span.
            assert 0 <= start <= end <= len(text), (text, start, end)
            covered.update(range(start, end))
        wanted = {i for i, ch in enumerate(text) if not ch.isspace() and unicodedata.category(ch) not in _DROPPABLE}
        assert wanted <= covered, (text, sorted(wanted - covered))


def test_roberta_mask_swallows_preceding_space(tokenizers_dir: Path) -> None:
    tok = build_tokenizer("bpe", tokenizers_dir / "bpe-mask")
    tokens = tok.convert_ids_to_tokens(tok("The capital is <mask>.")["input_ids"])
    assert tokens[-3:] == ["<mask>", ".", "</s>"] and tokens[-4] == "Ġis"
    added = json.loads((tokenizers_dir / "bpe-mask" / "tokenizer.json").read_text())["added_tokens"]
    assert next(t for t in added if t["content"] == "<mask>")["lstrip"] is True


def _run(task: str, pipe: transformers.Pipeline) -> object:
    """One representative call per task, with the shape of result each task promises."""
    if task == "feature-extraction":
        out = pipe("Hello world!")
        assert len(out[0][0]) == 32
    elif task == "text-classification":
        out = pipe(["This movie was great!", "東京は日本の首都です。 🙂👍"])
        assert all(o["label"] in DEFAULT_LABELS["sequence-classification"] for o in out)
    elif task == "token-classification":
        text = NER_SAMPLES[0]
        out = pipe(text)
        assert out and all(0 <= o["start"] <= o["end"] <= len(text) for o in out)
        assert {o["entity"] for o in out} <= set(DEFAULT_LABELS["token-classification"])
    elif task == "question-answering":
        context = "Paris is the capital of France."
        out = pipe(question="What is the capital of France?", context=context)
        assert out["answer"] == context[out["start"]:out["end"]]
    else:
        out = pipe(f"The capital of France is {pipe.tokenizer.mask_token}.")
        assert len(out) == 5 and all("token_str" in o for o in out)
    return out


@pytest.mark.parametrize("head", list(ENCODER_HEADS))
@pytest.mark.parametrize("arch", list(ENCODER_ARCHS))
def test_checkpoint_loads_in_pipeline(checkpoint_factory: Factory, arch: str, head: str) -> None:
    folder = checkpoint_factory(arch, head)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    task = TASK_FOR_HEAD[head]
    _run(task, transformers.pipeline(task, model=str(folder)))


@pytest.mark.parametrize("arch", list(ENCODER_ARCHS))
def test_zero_shot(checkpoint_factory: Factory, arch: str) -> None:
    folder = checkpoint_factory(arch, "sequence-classification", labels=NLI_LABELS)
    pipe = transformers.pipeline("zero-shot-classification", model=str(folder))
    out = pipe("The match was exciting", candidate_labels=["sports", "politics", "science"])
    assert sorted(out["labels"]) == ["politics", "science", "sports"]
    assert sum(out["scores"]) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("arch", list(ENCODER_ARCHS))
def test_classifier_outputs_depend_on_input(checkpoint_factory: Factory, arch: str) -> None:
    """The calibrated head must not pick one label for everything (on corpus sentences it
    was not calibrated on). One padded batch, not a pipeline loop, to stay fast."""
    import torch

    folder = checkpoint_factory(arch, "sequence-classification", labels=NLI_LABELS)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok(CORPUS[2::13], padding=True, return_tensors="pt")).logits
    assert len(set(logits.argmax(-1).tolist())) >= 2, logits


@pytest.mark.parametrize(
    ("problem_type", "labels", "num_labels"),
    [("multi_label_classification", ["a", "b", "c"], 3), ("regression", None, 1)],
)
def test_problem_type(checkpoint_factory: Factory, problem_type: str, labels: list[str] | None,
                      num_labels: int) -> None:
    folder = checkpoint_factory("bert", "sequence-classification", labels=labels, problem_type=problem_type)
    config = json.loads((folder / "config.json").read_text())
    assert config["problem_type"] == problem_type and len(config["id2label"]) == num_labels
    out = transformers.pipeline("text-classification", model=str(folder))("Hello world!", top_k=None)
    assert len(out) == num_labels
    if problem_type == "multi_label_classification":  # sigmoid per label, not softmax
        assert all(0.0 <= o["score"] <= 1.0 for o in out) and sum(o["score"] for o in out) != pytest.approx(1.0)
    else:  # regression: the raw logit, no activation
        assert out[0]["label"] == "SCORE" and isinstance(out[0]["score"], float)


def test_config_matches_tokenizer(checkpoint_factory: Factory) -> None:
    folder = checkpoint_factory("roberta", "base", max_length=32)
    config = transformers.AutoConfig.from_pretrained(folder)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert config.vocab_size == len(tok) and config.pad_token_id == tok.pad_token_id == 1
    assert config.max_position_embeddings == 34 and tok.model_max_length == 32


def test_same_seed_same_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    first = load_file(build_checkpoint("albert", "token-classification", tmp_path / "a") / "model.safetensors")
    second = load_file(build_checkpoint("albert", "token-classification", tmp_path / "b") / "model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)


def test_factory_caches_per_arguments(checkpoint_factory: Factory) -> None:
    assert checkpoint_factory("bert", "base") == checkpoint_factory("bert", "base")
    assert checkpoint_factory("bert", "base") != checkpoint_factory("bert", "base", seed=1)


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_checkpoint("t5", "base", tmp_path)
    with pytest.raises(ValueError, match="does not fit arch 'gpt2'"):
        build_checkpoint("gpt2", "base", tmp_path)
    with pytest.raises(ValueError, match="classification heads"):
        build_checkpoint("bert", "masked-lm", tmp_path, labels=["x"])
