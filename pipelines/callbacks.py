"""Keras callbacks of the training pipeline."""

from __future__ import annotations

import io
import os

import keras
import numpy as np
import tensorflow as tf

from tfddim.diffusion import schedules


def image_grid(images: np.ndarray, columns: int | None = None, scale: int = 1, pad: int = 1) -> np.ndarray:
    """[N, H, W, C] in [-1, 1] → one uint8 grid, tiles enlarged ``scale``× and separated by ``pad`` gray pixels."""
    images = np.repeat(np.repeat(np.asarray(images, np.float32), scale, axis=1), scale, axis=2)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)  # 0 is mid-gray
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = img
    return np.clip((grid + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def scatter_png(points: np.ndarray) -> np.ndarray:
    """A scatter plot of 2-D samples as an RGB uint8 image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3))
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return tf.image.decode_png(buf.getvalue(), channels=3).numpy()


class SampleGrid(keras.callbacks.Callback):
    """Every ``train.sample_every`` epochs, sample the EMA network from fixed noise; write a PNG and a TensorBoard image.

    The same x_T every time, so the grids show one set of samples improving.
    """

    def __init__(self, cfg, png_dir: str, log_dir: str):
        super().__init__()
        self.cfg = cfg
        self.png_dir = png_dir
        self.writer = tf.summary.create_file_writer(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        every = self.cfg.train.sample_every
        if not every or (epoch + 1) % every:
            return
        model = self.model
        s = self.cfg.sampling
        n = self.cfg.train.num_sample_images
        x_T = tf.random.stateless_normal((n,) + model.data_shape, seed=[self.cfg.train.seed, 0])
        options = {"clip_x0": tuple(s.clip_x0)} if s.clip_x0 else {}
        sampler = model.sampler(method=s.method, **options)
        taus = schedules.spaced_timesteps(model.schedule.num_timesteps, min(s.num_steps, model.schedule.num_timesteps), s.spacing)
        labels = np.arange(n, dtype=np.int32) % model.num_classes if model.num_classes else None
        eta = s.eta if s.method == "ddim" else 0.0
        x0 = sampler.sample(x_T, taus, eta=eta, seed=self.cfg.train.seed, labels=labels).numpy()
        image = image_grid(x0, scale=max(1, 64 // x0.shape[1])) if x0.ndim == 4 else scatter_png(x0)
        os.makedirs(self.png_dir, exist_ok=True)
        tf.io.write_file(os.path.join(self.png_dir, f"epoch_{epoch + 1:04d}.png"), tf.image.encode_png(image))
        with self.writer.as_default():
            tf.summary.image("ema_samples", image[None], step=epoch + 1)
        self.writer.flush()
