"""Semantic search over a few sentences with a feature-extraction bundle, no torch needed.

    python examples/semantic_search.py bundles/all-MiniLM-L6-v2 --dtype q8
"""

from __future__ import annotations

import argparse

import numpy as np

from edgeformers.runtime import pipeline

CORPUS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "A cheetah is running behind its prey.",
]
QUERIES = ["A man is eating pasta.", "Someone in a gorilla costume is playing a set of drums.",
           "A cheetah chases prey on across a field."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    embed = pipeline("feature-extraction", args.bundle, dtype=args.dtype, device=args.device)
    print(f"loaded {args.bundle} ({args.dtype}) on {', '.join(embed.providers)}")
    # The bundle records the checkpoint's sentence-transformers pooling (mean + normalize),
    # so the pipeline returns one unit vector per sentence.
    corpus = np.asarray(embed(CORPUS))
    for query in QUERIES:
        scores = corpus @ np.asarray(embed(query))
        print(f"\nquery: {query}")
        for index in np.argsort(-scores)[:3]:
            print(f"  {scores[index]:.3f}  {CORPUS[index]}")


if __name__ == "__main__":
    main()
