"""How often a converted sentencepiece tokenizer disagrees with the slow one, beyond the
export check's texts: edgeformers' Marian converter (exporter/spm_convert.py) against
MarianTokenizer, next to transformers' own T5 converter against T5Tokenizer on the same
sentencepiece model as the baseline.

Models: a source model trained on English (the stdlib's docstrings), a target model on
native-language text (glibc's locale files, when the machine has them) plus some English,
one shared vocab.json numbered in shuffled order. Texts: held-out English lines, locale
lines, and random strings over ten Unicode blocks with random runs of spaces. Reports
encode and decode mismatches per group; nothing is asserted.

    .venv/bin/python benchmarks/bench_spm_conversion.py [--texts 3000] [--vocab 4000] [--model-type bpe]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_BLOCKS = [(0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x4E00, 0x4E80), (0x1F600, 0x1F64F),
           (0x3040, 0x309F), (0xAC00, 0xAC40), (0x2000, 0x206F), (0xFB00, 0xFB06)]


def english_lines() -> list[str]:
    """Docstring lines of the standard library's own source files (read, never imported)."""
    lines: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))[:1500]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                lines += [line.strip() for line in doc.splitlines() if len(line.strip()) > 20]
    return lines


def locale_lines() -> list[str]:
    """Native names and words from glibc's locale sources (``<Uxxxx>`` escapes decoded)."""
    lines: list[str] = []
    for path in sorted(Path("/usr/share/i18n/locales").glob("*"))[:40]:  # aa_DJ .. be_BY: Latin, Ethiopic, Arabic, Cyrillic
        try:
            text = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        decoded = re.sub(r"<U([0-9A-F]{4,5})>", lambda m: chr(int(m.group(1), 16)), text)
        lines += [line.strip() for line in decoded.splitlines() if len(line.strip()) > 20]
    return lines


def fuzz(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 30)):
        low, high = rng.choice(_BLOCKS)
        out.append(chr(rng.randint(low, high)))
        if rng.random() < 0.2:
            out.append(" " * rng.randint(1, 3))
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000, help="texts per group")
    parser.add_argument("--vocab", type=int, default=4000, help="source sentencepiece vocabulary size")
    parser.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram",
                        help="sentencepiece model type (Marian ships unigram)")
    args = parser.parse_args()

    import transformers

    from edgeformers.exporter.spm_convert import marian_tokenizers
    from tests.fixtures.sentencepiece_models import _pieces, train_spm

    rng = random.Random(0)
    english, native = english_lines(), locale_lines()
    rng.shuffle(english)
    rng.shuffle(native)
    held_out, train = english[: args.texts], english[args.texts:]
    folder = Path(tempfile.mkdtemp(prefix="spm-bench-"))
    ids = {"eos_id": 0, "unk_id": 1, "bos_id": -1, "pad_id": -1}
    source = train_spm(train, folder / "source.spm", args.vocab, args.model_type, **ids)
    target = train_spm(native[args.texts:] + train[::5], folder / "target.spm", int(args.vocab * 1.5),
                       args.model_type, **ids)
    pieces = sorted((set(_pieces(source)) | set(_pieces(target))) - {"</s>", "<unk>"})
    rng.shuffle(pieces)
    vocab = {p: i for i, p in enumerate(["</s>", "<unk>", *pieces, "<pad>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    marian = transformers.MarianTokenizer(str(source), str(target), str(folder / "vocab.json"))
    ours = marian_tokenizers(marian)["tokenizer.json"]
    t5_dir = folder / "t5"
    transformers.T5Tokenizer(str(source), legacy=False, extra_ids=0).save_pretrained(str(t5_dir))
    (t5_dir / "tokenizer.json").unlink(missing_ok=True)
    t5_slow = transformers.T5Tokenizer.from_pretrained(str(t5_dir))
    t5_fast = transformers.T5TokenizerFast.from_pretrained(str(t5_dir), from_slow=True)

    groups = {"english (held out)": held_out, "locale text": native[: args.texts],
              "random unicode": [fuzz(rng) for _ in range(args.texts)]}
    print(f"source vocab {len(_pieces(source))}, target vocab {len(_pieces(target))}, vocab.json {len(vocab)}")
    print(f"{'group':<20} {'texts':>6} {'ours enc':>9} {'ours dec':>9} {'t5 conv enc':>12}")
    for name, texts in groups.items():
        if not texts:
            print(f"{name:<20} {'(none on this machine)':>30}")
            continue
        enc = sum(marian(t)["input_ids"] != ours.encode(t).ids for t in texts)
        dec = 0
        for text in texts:
            target_ids = marian(text_target=text)["input_ids"]
            dec += marian.decode(target_ids, skip_special_tokens=True) != ours.decode(
                target_ids, skip_special_tokens=True).strip()
        base = sum(t5_slow(t)["input_ids"] != t5_fast(t)["input_ids"] for t in texts)
        print(f"{name:<20} {len(texts):>6} {enc:>9} {dec:>9} {base:>12}")


if __name__ == "__main__":
    main()
