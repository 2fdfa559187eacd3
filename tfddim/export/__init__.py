"""Export: the whole sampling loop as a SavedModel in TF Serving's layout, and as ONNX graphs.

- :mod:`~tfddim.export.layout`: the one owner of the on-disk layout (file names, ``export.json``); no TensorFlow.
- :mod:`~tfddim.export.saved_model`: the ``tf.Module`` of signatures and the atomic writer.
- :mod:`~tfddim.export.onnx` and :mod:`~tfddim.export.onnx_loops`: tf2onnx conversion and loop hoisting.
- :mod:`~tfddim.export.warmup`: TF Serving warmup requests.
"""

from tfddim.export.saved_model import ONNX_TOLERANCE, ExportOptions, SamplerModule, export_saved_model

__all__ = ["ExportOptions", "SamplerModule", "export_saved_model", "ONNX_TOLERANCE"]
