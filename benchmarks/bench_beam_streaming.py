"""How much of a beam search's answer a stream shows before the search ends.

``BeamSearch.settled`` (runtime/generation/beams.py) shows the tokens that the best kept
hypothesis and every running beam that can still beat it share. The baseline is the
plain common prefix of every running beam and every kept hypothesis (what is safe
without reasoning about scores). Toy models: logits drawn from each beam's whole history
(tests/test_beam_streaming.py's HistoryStepper), 4 beams, length_penalty 1.0, 20 new
tokens at most, 150 seeds per EOS bias; the figure is the share of the final answer's
tokens shown before the last step, averaged over seeds.

    python benchmarks/bench_beam_streaming.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import table, write_results  # noqa: E402

from edgeformers.runtime.generation.beams import BeamSearch, _common_prefix  # noqa: E402
from edgeformers.runtime.generation.settings import GenerationSettings  # noqa: E402
from tests.test_beam_streaming import EOS, HistoryStepper  # noqa: E402

SEEDS = 150


def plain_common_prefix(search: BeamSearch) -> int:
    """The baseline: what every running beam and every kept hypothesis share."""
    fed, cur = search.fed, search.cur
    rows, limit = [search.running[0, :, fed:cur]], cur - fed
    kept = np.flatnonzero(search.is_finished[0])
    if kept.size:
        rows.append(search.finished_seqs[0, kept, fed:cur])
        limit = min(limit, int(((search.finished_idx[0, kept] != -1).sum(axis=1)).min()))
    return min(limit, _common_prefix(np.concatenate(rows)))


def shares(eos_bias: float) -> tuple[float, float]:
    baseline, settled = [], []
    for seed in range(SEEDS):
        settings = GenerationSettings(num_beams=4, length_penalty=1.0, max_new_tokens=20, eos_token_id=[EOS],
                                      pad_token_id=EOS)
        search = BeamSearch(HistoryStepper(seed, eos_bias), np.array([[1]], dtype=np.int64), settings)
        before_end = (0, 0)
        while True:
            search.step()
            if search.done:
                break
            before_end = (plain_common_prefix(search), search.settled(0).size)
        answer = search.best(0).size
        baseline.append(before_end[0] / answer)
        settled.append(before_end[1] / answer)
    return float(np.mean(baseline)), float(np.mean(settled))


def main() -> None:
    rows = []
    for bias in (0.0, 1.0, 2.0):
        baseline, settled = shares(bias)
        rows.append([bias, baseline, settled])
    print(table(["EOS bias", "common prefix of all beams", "edgeformers settled (beams that cannot win pruned)"],
                rows, digits=2))
    write_results("bench_beam_streaming", {"rows": rows})


if __name__ == "__main__":
    main()
