"""Data: typed configs, the sources (digits, mixture, npz, folders, TFDS), the tf.data pipeline, the mixture oracle.

``DataConfig`` → :func:`make_dataset` gives ``(x, label)`` batches in [-1, 1];
:func:`dataset_info` gives the shape and classes without reading the data;
:func:`latent_dataset` gives a latent diffusion model's (z·scale_factor, label) batches.
"""

from tfddim.data.config import SPLITS, DataConfig
from tfddim.data.latents import encode_moments, latent_dataset
from tfddim.data.pipeline import low_resolution, make_dataset, resize_and_center_crop
from tfddim.data.sources import area_downsample, dataset_info, load_digits, load_mnist, mixture2d_distribution

__all__ = ["SPLITS", "DataConfig", "make_dataset", "resize_and_center_crop", "dataset_info", "load_digits",
           "load_mnist", "area_downsample", "low_resolution",
           "mixture2d_distribution", "encode_moments", "latent_dataset"]
