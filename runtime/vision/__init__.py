"""Image inputs and preprocessing for the image pipelines: Pillow decodes and resizes
(the optional extra ``vision``, imported lazily), numpy does the rest."""

from edgeformers.runtime.vision.images import INSTALL_HINT, is_image, load_image, pillow
from edgeformers.runtime.vision.processor import ImageProcessor

__all__ = ["INSTALL_HINT", "ImageProcessor", "is_image", "load_image", "pillow"]
