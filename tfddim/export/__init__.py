"""Export: the whole sampling loop as a SavedModel in TF Serving's layout, and as ONNX graphs.

- :mod:`~tfddim.export.layout`: the one owner of the on-disk layout (file names, ``export.json``); no TensorFlow.
- :mod:`~tfddim.export.saved_model`: the ``tf.Module`` of signatures and the atomic writer.
- :mod:`~tfddim.export.onnx` and :mod:`~tfddim.export.onnx_loops`: tf2onnx conversion and loop hoisting.
- :mod:`~tfddim.export.warmup`: TF Serving warmup requests.

The public names below come from :mod:`~tfddim.export.saved_model`, imported on first use, so
``import tfddim.export.layout`` does not load TensorFlow.
"""

import importlib

__all__ = ["ExportOptions", "SamplerModule", "export_saved_model", "ONNX_TOLERANCE"]


def __getattr__(name: str):
    """``tfddim.export.<public name>`` from :mod:`tfddim.export.saved_model` (imported here, on first use)."""
    if name in __all__:
        return getattr(importlib.import_module("tfddim.export.saved_model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
