"""One small exception hierarchy shared by the exporter, the runtime and the CLI.

It lives in the catalog package because that is the one package every other part may
import without pulling anything heavy.
"""


class EdgeformersError(Exception):
    """Base of every error edgeformers raises on purpose."""


class BundleError(EdgeformersError):
    """A bundle folder is missing something, or holds something the runtime cannot use."""


class ChecksumError(BundleError):
    """A bundle file's size or sha256 differs from what the manifest recorded."""


class InputError(EdgeformersError, ValueError):
    """A pipeline call got inputs or arguments it cannot take."""


class UnsupportedTaskError(EdgeformersError, ValueError):
    """An unknown task, or a task the model's architecture cannot do."""


class ModelOutputError(EdgeformersError):
    """An ONNX graph failed while running, or gave outputs no result can come from (NaN or
    infinite values, e.g. an fp16 overflow): the error names the graph and the output."""


class DeviceError(EdgeformersError):
    """A requested device is unavailable and ``strict=True`` forbade the CPU fallback."""


class ExportError(EdgeformersError):
    """An export could not be completed; the output folder is left as it was."""


class ValidationError(ExportError):
    """The exported graph disagrees with the PyTorch original beyond the tolerance."""


class MissingExtraError(EdgeformersError, ImportError):
    """A command needs an optional extra (e.g. ``edgeformers[export]``) that is not installed."""
