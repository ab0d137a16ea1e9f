"""image-classification, with transformers' arguments (``top_k``, ``function_to_apply``)
and outputs (``[{"label", "score"}]`` per image, best first)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.pipelines.base import Pipeline, check_top_k, chunks, sigmoid, softmax
from edgeformers.runtime.vision import ImageProcessor, pillow
from edgeformers.runtime.vision.images import image_batch

_FUNCTIONS = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}
#: transformers' ImageClassificationPipeline default (top_k=None means it too).
DEFAULT_TOP_K = 5


class ImagePipeline(Pipeline):
    """What the image pipelines share: no tokenizer; the bundle's preprocessor_config.json
    read and checked at load; Pillow required at load, not on the first call."""

    uses_tokenizer = False

    def prepare(self) -> None:
        pillow()
        name = "preprocessor_config.json"
        config = self.bundle.read_json(name, required=True)
        self.processor = ImageProcessor.from_config(config, f"{self.bundle.path}/{name}")
        if "pixel_values" not in self.model.input_names:
            raise BundleError(f"{self.bundle.path}: the graph takes {self.model.input_names}, not pixel_values")

    def feed(self, images: list[Any]) -> dict[str, np.ndarray]:
        """The graph's inputs for RGB images (pixel_mask only where the graph takes it)."""
        arrays = self.processor(images)
        return {name: value for name, value in arrays.items() if name in self.model.input_names}


class ImageClassificationPipeline(ImagePipeline):
    task = "image-classification"

    def default_function(self) -> str:
        """The activation transformers picks from the config's ``problem_type``."""
        problem_type = self.bundle.manifest.processing.get("problem_type")
        if problem_type == "multi_label_classification" or len(self.labels) == 1:
            return "sigmoid"
        if problem_type == "single_label_classification" or len(self.labels) > 1:
            return "softmax"
        return "none"

    def __call__(self, inputs: Any, top_k: int | None = None, function_to_apply: Any = None,
                 timeout: float | None = None, batch_size: int | None = None) -> Any:
        """One image gives ``[{label, score}, ...]`` (the ``top_k`` best, default 5, at most
        the number of labels); a list gives one such list per image. ``timeout`` is accepted
        for transformers' signature; the runtime reads local images only."""
        check_top_k(top_k)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise InputError(f"timeout must be a number of seconds or None, got {timeout!r}")
        function = function_to_apply or self.default_function()
        function = getattr(function, "value", function)  # transformers' ClassificationFunction
        try:
            activate = _FUNCTIONS[str(function).lower()]
        except KeyError:
            raise InputError(
                f"function_to_apply {function_to_apply!r} is unknown; expected 'softmax', 'sigmoid' or 'none'"
            ) from None
        images, single = image_batch(inputs)
        results = []
        for part in chunks(len(images), batch_size):
            logits = self.model.run(self.feed(images[part]), ["logits"])["logits"].astype(np.float32)
            results.extend(self._ranked(row, top_k or DEFAULT_TOP_K) for row in activate(logits))
        return results[0] if single else results

    def _ranked(self, scores: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        labelled = [{"label": self.label(i), "score": float(s)} for i, s in enumerate(scores)]
        labelled.sort(key=lambda item: item["score"], reverse=True)  # stable, as transformers' list.sort
        return labelled[:top_k]
