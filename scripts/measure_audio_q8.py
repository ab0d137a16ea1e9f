"""Dynamic-int8 settings on the tiny wav2vec2 / HuBERT test checkpoints: each variant's
agreement with fp32 (CTC characters, or labels), as the exporter's check computes it, for
per-channel and reduce-range on and off: the figures behind the audio families' q8
settings in models/families.py.

    .venv/bin/python scripts/measure_audio_q8.py [--model-type hubert] [--task audio-classification]

Builds the fixture checkpoint, exports fp32 only, and makes and measures each q8 variant
outside the bundle, so a figure below a threshold is reported instead of failing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeformers.exporter.agreement import AgreementCheck  # noqa: E402
from edgeformers.exporter.build import export  # noqa: E402
from edgeformers.exporter.quantize import make_variant  # noqa: E402
from edgeformers.models.families import FAMILIES  # noqa: E402
from tests.fixtures.audio_checkpoints import build_audio_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-type", default="wav2vec2", choices=("wav2vec2", "hubert"))
    parser.add_argument("--task", default="automatic-speech-recognition",
                        choices=("automatic-speech-recognition", "audio-classification"))
    args = parser.parse_args()
    head = "ctc" if args.task == "automatic-speech-recognition" else "audio-classification"
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_audio_checkpoint(Path(tmp) / "checkpoint", model_type=args.model_type, head=head)
        bundle = Path(tmp) / "bundle"
        export(str(checkpoint), bundle, args.task, dtypes=("fp32",))
        fp32 = bundle / "onnx" / "model.onnx"
        check = AgreementCheck.prepare(bundle, args.task, None, ["input_values"], fp32)
        family = FAMILIES[args.model_type]
        for per_channel in (False, True):
            for reduce_range in (False, True):
                settings = dataclasses.replace(family, quantize_per_channel=per_channel,
                                               quantize_reduce_range=reduce_range)
                target = Path(tmp) / f"q8_{per_channel}_{reduce_range}.onnx"
                make_variant(fp32, target, "q8", settings, external_data=False)
                report = check.measure(target)
                chosen = (per_channel, reduce_range) == (family.quantize_per_channel, family.quantize_reduce_range)
                print(f"per_channel={per_channel!s:5} reduce_range={reduce_range!s:5} {report['metric']} "
                      f"{report['value']:.3f} {report['details']}{'  <- catalog' if chosen else ''}")


if __name__ == "__main__":
    main()
