"""A quick sanity check of digit samples with an SVM (used by saved_models/digits/MODEL_CARD.md).

    tfddim sample --n 2000 --steps 50 --out /tmp/s.png --npz
    python tools/digits_svm_check.py /tmp/s.npz

Trains ``sklearn.svm.SVC(probability=True)`` on the embedded training digits,
reports its held-out accuracy, then for the samples: the share the SVM is more
than 90% sure about (next to the same share for the held-out real digits) and
the class counts. The evaluation pipeline (``tfddim evaluate``) supersedes this.
"""

import sys

import numpy as np
from sklearn.svm import SVC

from tfddim.data import load_digits


def main(path: str) -> None:
    x_tr, y_tr = load_digits("train")
    x_te, y_te = load_digits("test")
    svm = SVC(gamma="scale", probability=True, random_state=0).fit(x_tr.reshape(len(x_tr), -1), y_tr)
    samples = np.load(path)["x_0"]
    p_real = svm.predict_proba(x_te.reshape(len(x_te), -1))
    p = svm.predict_proba(samples.reshape(len(samples), -1))
    print(f"SVM held-out accuracy: {np.mean(p_real.argmax(1) == y_te):.3f}")
    print(f"share with p > 0.9: samples {np.mean(p.max(1) > 0.9):.3f}, real held-out {np.mean(p_real.max(1) > 0.9):.3f}")
    print(f"class counts of {len(samples)} samples: {np.bincount(p.argmax(1), minlength=10).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
