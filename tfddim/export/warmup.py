"""TF Serving warmup requests, in the file TF Serving looks for (:attr:`tfddim.export.layout.ExportLayout.warmup_requests`).

TF Serving replays these ``PredictionLog`` records (a TFRecord file) when it
loads a version, so the first real request does not pay for graph
initialisation. One small request per signature (batch 1, two steps).

The protos come from ``tensorflow-serving-api`` (``pip install 'tfddim[serving]'``);
without it the export skips the file and says so.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from tfddim.export import layout

__all__ = ["FILENAME", "available", "warmup_inputs", "write_warmup_requests", "read_warmup_requests"]

FILENAME = layout.WARMUP_REQUESTS  # the name TF Serving looks for (kept here for callers of warmup.FILENAME)


def available() -> bool:
    try:
        from tensorflow_serving.apis import prediction_log_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def warmup_inputs(data_shape, num_classes: Optional[int], network_conditional: Optional[bool] = None,
                  low_res_shape=None, pixel_shape=None) -> Dict[str, Dict[str, np.ndarray]]:
    """The inputs of one small request per signature (batch 1, num_steps 2).

    ``network_conditional``: ``predict_x0`` takes labels (default: whenever there are classes;
    False for an unconditional network exported with a guidance classifier). ``low_res_shape``: a
    super-resolution export's [h, w, C] (every signature then takes ``low_res``). ``pixel_shape``: a latent
    export's decoded [H, W, C] (``x_0`` and ``mask`` inputs are pixels; it adds ``decode``).
    """
    if network_conditional is None:
        network_conditional = num_classes is not None
    x = np.zeros((1, *data_shape), np.float32)
    pixels = x if pixel_shape is None else np.zeros((1, *pixel_shape), np.float32)
    steps = np.int32(2)
    cond = {} if num_classes is None else {"labels": np.zeros([1], np.int32), "guidance_scale": np.float32(1.0)}
    low = {} if low_res_shape is None else {"low_res": np.zeros((1, *low_res_shape), np.float32)}
    cond.update(low)
    noise = np.zeros((2, 1, *data_shape), np.float32)
    return {
        "serving_default": dict(x_T=x, num_steps=steps, eta=np.float32(0.0), seed=np.int64(0), **cond),
        "sample_with_noise": dict(x_T=x, num_steps=steps, eta=np.float32(1.0),
                                  noise=np.zeros((2, 1, *data_shape), np.float32), **cond),
        "sample_dpmpp_2m": dict(x_T=x, num_steps=steps, **cond),
        "sample_ode": dict(x_T=x, num_steps=steps, method=np.int32(0), spacing=np.int32(0), **cond),
        "sample_ddpm": dict(x_T=x, num_steps=steps, variance=np.int32(0), noise=np.zeros((2, 1, *data_shape), np.float32),
                            **cond),
        "sample_trajectory": dict(x_T=x, num_steps=steps, eta=np.float32(0.0), noise=np.zeros((0, 1, *data_shape), np.float32),
                                  **cond),
        "encode": dict(x_0=pixels, num_steps=steps, **cond),
        "edit": dict(x_0=pixels, strength=np.float32(0.5), num_steps=steps, eta=np.float32(0.0), seed=np.int64(0), **cond),
        "edit_with_noise": dict(x_0=pixels, strength=np.float32(0.5), num_steps=steps, eta=np.float32(1.0), start_noise=x,
                                noise=noise, **cond),
        "inpaint": dict(x_0=pixels, mask=np.ones_like(pixels), num_steps=steps, eta=np.float32(0.0), seed=np.int64(0),
                        **cond),
        "inpaint_with_noise": dict(x_0=pixels, mask=np.ones_like(pixels), num_steps=steps, eta=np.float32(0.0), x_T=x,
                                   noise=noise, **cond),
        "predict_x0": dict(x_t=x, t=np.zeros([1], np.int32), **({"labels": cond["labels"]} if network_conditional else {}),
                           **low),
        **({} if pixel_shape is None else {"decode": dict(z_0=x)}),
    }


def write_warmup_requests(saved_model_dir: str, model_name: str, data_shape, num_classes: Optional[int],
                          network_conditional: Optional[bool] = None, low_res_shape=None, pixel_shape=None) -> str:
    """Write the warmup requests file (:attr:`~tfddim.export.layout.ExportLayout.warmup_requests`); return its path."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = layout.ExportLayout(saved_model_dir).warmup_requests
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in warmup_inputs(data_shape, num_classes, network_conditional, low_res_shape,
                                                      pixel_shape).items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: str) -> List[tuple]:
    """``[(signature_name, {input: ndarray})]`` from the warmup file (to replay or inspect it)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(layout.ExportLayout(saved_model_dir).warmup_requests):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        out.append((request.model_spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return out
