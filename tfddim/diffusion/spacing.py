"""Timestep selection for accelerated sampling: which S of the T levels to visit.

Every spacing yields exactly S unique, strictly descending integer timesteps
in [0, T−1]. The last three named spacings are continuous recipes rounded to
integers: their rounded, ascending list a is made unique by
c_i = min(max_{j≤i}(a_j − j), T − S) + i (collisions pushed up, the top kept
inside [0, T−1]), the same rule ``quad`` uses; with S = 1 they give [T−1]
(one step from pure noise). ``logsnr`` and ``karras`` place the top step at
T−1 even under zero terminal SNR (λ_{T−1} = −∞), where their grid ends at
λ_{T−2}. The sampler steps from ``timesteps[i]`` to ``timesteps[i+1]``
(the next element of the list, never ``t − T//S``) and from the last element
to the clean level.

=============  ===================================  ==========================  ==================
ours           formula (0-based, ascending)          DDIM paper / code           diffusers / iDDPM
=============  ===================================  ==========================  ==================
``uniform``    τ_i = ⌊T/S⌋·i + offset, i < S         "linear" τ_i = ⌊ci⌋,        "leading" (+
                                                    code "uniform"              ``steps_offset``)
``quad``       τ_i = ⌊(√(0.8T)·i/(S−1))²⌋,           "quadratic", code "quad"    —
               collisions pushed apart
``linspace``   τ_i = round(i·(T−1)/(S−1))            —                           "linspace"; iDDPM's
                                                                                strided sampling
``trailing``   τ_i = round(T − i·T/S) − 1 (desc.)    —                           "trailing"
``logsnr``     nearest t to λ uniform in               DPM-Solver "logSNR"         —
               [λ_{T−1}, λ_0] (needs the schedule)
``karras``     nearest t in λ to EDM's σ_i, ρ = 7,   EDM (Karras et al. 2022)    ``use_karras_sigmas``
               σ = e^{−λ} (needs the schedule)
``time_        ⌊T·(√(1/T) + i/(S−1)·(1−√(1/T)))² − 1⌉ DPM-Solver                  —
quadratic``                                          "time_quadratic"
``"ddimN"``    range(0, T, k) with exactly N items   —                           iDDPM "ddimN"
``"a,b,c"``    counts a, b, c over equal sections    —                           iDDPM section counts
list           your own, strictly descending         —                           ``timesteps=[...]``
=============  ===================================  ==========================  ==================
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Sequence, Union

import numpy as np

__all__ = ["Spacing", "SCHEDULE_SPACINGS", "KARRAS_RHO", "Sections", "DdimStride", "Explicit", "SpacingSpec", "parse_spacing", "spaced_timesteps", "GRAPH_SPACINGS",
           "graph_timesteps"]


class Spacing(str, enum.Enum):
    """The named spacings."""

    UNIFORM = "uniform"
    QUAD = "quad"
    LINSPACE = "linspace"
    TRAILING = "trailing"
    LOGSNR = "logsnr"
    KARRAS = "karras"
    TIME_QUADRATIC = "time_quadratic"


# The spacings computed from the schedule's λ (the others need only T and S).
SCHEDULE_SPACINGS = (Spacing.LOGSNR, Spacing.KARRAS)
KARRAS_RHO = 7.0  # EDM's ρ


@dataclasses.dataclass(frozen=True)
class Sections:
    """improved-diffusion's "a,b,c": T split into equal sections, ``counts[k]`` steps in section k."""

    counts: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DdimStride:
    """improved-diffusion's "ddimN": ``range(0, T, k)`` for the integer k that gives exactly N steps."""

    num_steps: int


@dataclasses.dataclass(frozen=True)
class Explicit:
    """A user-given list of timesteps, strictly descending."""

    timesteps: tuple[int, ...]


SpacingSpec = Union[Spacing, Sections, DdimStride, Explicit]


def parse_spacing(spec) -> SpacingSpec:
    """Parse a spacing given as a name, an improved-diffusion string or a list, once, into a typed value."""
    if isinstance(spec, (Spacing, Sections, DdimStride, Explicit)):
        return spec
    if isinstance(spec, str):
        text = spec.strip().lower()
        for member in Spacing:
            if text == member.value:
                return member
        if text.startswith("ddim"):
            digits = text[len("ddim"):]
            if digits.isdigit() and int(digits) >= 1:
                return DdimStride(int(digits))
            raise ValueError(f"spacing {spec!r}: expected 'ddimN' with a positive integer N")
        parts = [p.strip() for p in text.split(",")]
        if parts and all(p.isdigit() for p in parts):
            counts = tuple(int(p) for p in parts)
            if any(c < 1 for c in counts):
                raise ValueError(f"spacing {spec!r}: every section count must be >= 1")
            return Sections(counts)
        raise ValueError(
            f"unknown spacing {spec!r}; expected one of {[m.value for m in Spacing]}, "
            "'ddimN', comma-separated section counts such as '10,15,20', or a list of timesteps"
        )
    if isinstance(spec, (np.ndarray, Sequence)) and not isinstance(spec, (bytes, bytearray)):
        arr = np.asarray(spec)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"spacing (explicit timesteps) must be a non-empty 1-D list, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
            raise ValueError("spacing (explicit timesteps) must hold integers")
        return Explicit(tuple(int(v) for v in arr))
    raise ValueError(f"spacing must be a name, a string or a list of timesteps, got {type(spec).__name__}")


def _check_counts(num_timesteps: int, num_steps: int) -> None:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an integer, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps > num_timesteps:
        raise ValueError(f"num_steps ({num_steps}) must not exceed num_timesteps ({num_timesteps})")


def _quad(num_timesteps: int, num_steps: int) -> np.ndarray:
    """DDIM's quadratic τ, with collisions at small t pushed apart so all S steps stay unique."""
    if num_steps == 1:
        return np.array([0])
    seq = (np.linspace(0.0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2).astype(np.int64)
    return _unique_ascending(seq, num_timesteps)


def _unique_ascending(asc: np.ndarray, num_timesteps: int) -> np.ndarray:
    """c_i = min(max_{j≤i}(a_j − j), T − S) + i: a non-decreasing list made strictly increasing inside [0, T−1]."""
    i = np.arange(len(asc))
    return np.minimum(np.maximum.accumulate(asc - i), num_timesteps - len(asc)) + i


def _finite_lambda_range(half_log_snr: np.ndarray) -> tuple[float, float]:
    """(λ_0, the smallest finite λ): the grid of ``logsnr``/``karras`` (λ_{T−2} under zero terminal SNR)."""
    top = half_log_snr[-1] if np.isfinite(half_log_snr[-1]) else half_log_snr[-2]
    return float(half_log_snr[0]), float(top)


def _lambda_targets(spec, num_steps: int, lam_max: float, lam_min: float, xp):
    """The S target λ's, ascending in t (descending in λ), in float64, written once for numpy and TF.

    ``logsnr``: λ_0 + k/(S−1)·(λ_min − λ_0). ``karras``: σ_k = (σ_min^{1/ρ} + k/(S−1)·(σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ
    with σ = e^{−λ} (EDM eq. 5, ρ = 7), returned as λ = −log σ.
    """
    k = xp["range"](num_steps)
    frac = k / xp["maximum"](num_steps - 1.0, 1.0)
    if spec is Spacing.LOGSNR:
        return lam_max + frac * (lam_min - lam_max)
    inv = 1.0 / KARRAS_RHO
    lo, hi = np.exp(-lam_max) ** inv, np.exp(-lam_min) ** inv
    return -KARRAS_RHO * xp["log"](lo + frac * (hi - lo))


def _nearest_levels(targets: np.ndarray, half_log_snr: np.ndarray) -> np.ndarray:
    """For each target λ, the t whose λ_t is closest (the first on a tie); −∞ never wins against a finite target."""
    lam = np.where(np.isfinite(half_log_snr), half_log_snr, -1e300)
    return np.argmin(np.abs(lam[None, :] - targets[:, None]), axis=1).astype(np.int64)


def _schedule_spacing(spec, num_timesteps: int, num_steps: int, schedule) -> np.ndarray:
    if schedule is None:
        raise ValueError(f"spacing {spec.value!r} is placed by the schedule's log-SNR: pass schedule=")
    lam = np.asarray(schedule.half_log_snr)
    if len(lam) != num_timesteps:
        raise ValueError(f"schedule has {len(lam)} timesteps but num_timesteps={num_timesteps}")
    if num_steps == 1:
        return np.array([num_timesteps - 1], np.int64)
    xp = {"range": lambda n: np.arange(n, dtype=np.float64), "maximum": np.maximum, "log": np.log}
    asc = _nearest_levels(_lambda_targets(spec, num_steps, *_finite_lambda_range(lam), xp), lam)
    asc[0], asc[-1] = 0, num_timesteps - 1
    return _unique_ascending(asc, num_timesteps)


def _time_quadratic(num_timesteps: int, num_steps: int) -> np.ndarray:
    """DPM-Solver's ``time_quadratic``: t = (√t_0 + k/(S−1)·(1 − √t_0))² on t ∈ [1/T, 1], as T·t − 1, rounded."""
    if num_steps == 1:
        return np.array([num_timesteps - 1], np.int64)
    a = np.sqrt(1.0 / num_timesteps)
    frac = np.arange(num_steps, dtype=np.float64) / (num_steps - 1.0)
    u = a + frac * (1.0 - a)
    asc = np.round(num_timesteps * (u * u) - 1.0).astype(np.int64)
    return _unique_ascending(asc, num_timesteps)


def _sections(num_timesteps: int, counts: Sequence[int]) -> np.ndarray:
    """improved-diffusion's ``space_timesteps`` for section counts (rounded strides per section)."""
    size_per, extra = divmod(num_timesteps, len(counts))
    start, taken = 0, []
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError(f"spacing: cannot take {count} steps from a section of {size} timesteps")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        taken += [start + round(stride * i) for i in range(count)]
        start += size
    return np.asarray(taken, dtype=np.int64)


def spaced_timesteps(num_timesteps: int, num_steps: int | None = None, spacing="uniform", *, offset: int = 0,
                     schedule=None) -> np.ndarray:
    """Exactly ``num_steps`` unique, strictly descending timesteps in [0, T−1].

    Args:
        num_timesteps: T, the length of the training process (>= 2).
        num_steps: S, the number of sampling steps (1 <= S <= T). Optional for
            section strings and explicit lists, where it is implied; if given it
            must match.
        spacing: a :class:`Spacing` name, ``"ddimN"``, ``"a,b,c"``, or an
            explicit strictly descending list (see the module table).
        offset: added to every ``uniform`` timestep (diffusers' ``steps_offset``).
        schedule: the :class:`~tfddim.diffusion.schedules.Schedule`, for ``logsnr`` and ``karras``
            (placed by its λ_t); ignored by the other spacings.

    Returns:
        int64 numpy array of shape ``[S]``, descending.

    Raises:
        ValueError: naming the offending argument.
    """
    spec = parse_spacing(spacing)
    if isinstance(spec, Explicit):
        arr = np.asarray(spec.timesteps, dtype=np.int64)
        _check_counts(num_timesteps, num_steps if num_steps is not None else len(arr))
        if num_steps is not None and num_steps != len(arr):
            raise ValueError(f"num_steps={num_steps} but the explicit timesteps list has {len(arr)} entries")
        if arr.min() < 0 or arr.max() > num_timesteps - 1:
            raise ValueError(f"explicit timesteps must lie in [0, {num_timesteps - 1}], got min {arr.min()}, max {arr.max()}")
        if np.any(np.diff(arr) >= 0):
            raise ValueError("explicit timesteps must be strictly descending (unique, largest first)")
        return arr
    if isinstance(spec, Sections):
        total = sum(spec.counts)
        if num_steps is not None and num_steps != total:
            raise ValueError(f"num_steps={num_steps} but spacing sections {spec.counts} sum to {total}")
        _check_counts(num_timesteps, total)
        asc = _sections(num_timesteps, spec.counts)
    elif isinstance(spec, DdimStride):
        if num_steps is not None and num_steps != spec.num_steps:
            raise ValueError(f"num_steps={num_steps} but spacing asks for ddim{spec.num_steps}")
        _check_counts(num_timesteps, spec.num_steps)
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == spec.num_steps:
                asc = np.arange(0, num_timesteps, stride, dtype=np.int64)
                break
        else:
            raise ValueError(f"spacing ddim{spec.num_steps}: no integer stride gives exactly {spec.num_steps} of {num_timesteps} steps")
    else:
        if num_steps is None:
            raise ValueError(f"num_steps is required for spacing {spec.value!r}")
        _check_counts(num_timesteps, num_steps)
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        if offset and spec is not Spacing.UNIFORM:
            raise ValueError(f"offset applies only to spacing 'uniform', not {spec.value!r}")
        if spec is Spacing.UNIFORM:
            asc = np.arange(num_steps, dtype=np.int64) * (num_timesteps // num_steps) + offset
            if asc[-1] > num_timesteps - 1:
                raise ValueError(f"offset={offset} pushes the uniform timesteps past T-1={num_timesteps - 1}")
        elif spec is Spacing.QUAD:
            asc = _quad(num_timesteps, num_steps)
        elif spec is Spacing.LINSPACE:
            asc = _sections(num_timesteps, (num_steps,))
        elif spec in SCHEDULE_SPACINGS:
            asc = _schedule_spacing(spec, num_timesteps, num_steps, schedule)
        elif spec is Spacing.TIME_QUADRATIC:
            asc = _time_quadratic(num_timesteps, num_steps)
        else:  # TRAILING: diffusers' round(arange(T, 0, -T/S)) - 1, with the count fixed at S
            desc = np.round(num_timesteps - np.arange(num_steps) * (num_timesteps / num_steps)).astype(np.int64) - 1
            asc = desc[::-1]
    return np.ascontiguousarray(np.asarray(asc, dtype=np.int64)[::-1])


# The spacings a graph can compute from a tensor S (exports take num_steps at request time).
GRAPH_SPACINGS = (Spacing.UNIFORM, Spacing.LINSPACE, Spacing.TRAILING, Spacing.QUAD, Spacing.LOGSNR, Spacing.KARRAS,
                  Spacing.TIME_QUADRATIC)


def graph_timesteps(num_timesteps: int, num_steps, spacing=Spacing.UNIFORM, schedule=None):
    """:func:`spaced_timesteps` for a *tensor* S, as int32 graph ops (exports), beside its numpy version.

    Supports every named spacing (:data:`GRAPH_SPACINGS`) with the same arithmetic in float64 and the
    same rounding (half to even) as the numpy version above; ``logsnr``/``karras`` bake the schedule's
    λ table in as a constant and pick the nearest level with an ``ArgMin`` over ``[S, T]``. The running
    maximum of the collision rule is a masked ``[S, S]`` reduction (no loop, so ONNX converts it).
    ``num_steps`` must already be in [1, T]. TensorFlow is imported here only, so the numpy schedules
    and spacings load without it.
    """
    import tensorflow as tf

    spec = parse_spacing(spacing)
    if spec not in GRAPH_SPACINGS:
        raise ValueError(f"spacing {spacing!r} cannot be computed in a graph; use one of {[m.value for m in GRAPH_SPACINGS]}")
    T = num_timesteps
    s = tf.cast(num_steps, tf.int32)
    i = tf.range(s)
    fi = tf.cast(i, tf.float64)
    if spec is Spacing.TRAILING:
        return tf.cast(tf.round(T - fi * (T / tf.cast(s, tf.float64))), tf.int32) - 1
    if spec is Spacing.UNIFORM:
        return tf.reverse(i * (T // s), [0])
    if spec is Spacing.LINSPACE:
        stride = tf.where(s > 1, tf.cast(T - 1, tf.float64) / tf.cast(tf.maximum(s - 1, 1), tf.float64), 1.0)
        return tf.reverse(tf.cast(tf.round(fi * stride), tf.int32), [0])
    denom = tf.maximum(tf.cast(s, tf.float64) - 1.0, 1.0)
    if spec is Spacing.QUAD:
        # np.linspace(0, stop, S): i·step, the last element exactly stop; then .astype(int) truncates
        stop = float(np.sqrt(T * 0.8))
        pos = tf.where(tf.equal(i, s - 1), tf.constant(stop, tf.float64), fi * (stop / denom))  # not tf.cast: via float32
        pos = tf.where(s > 1, pos, tf.zeros_like(pos))
        asc = tf.cast(tf.math.floor(pos * pos), tf.int32)  # x*x, as numpy squares (pow may round differently)
    elif spec is Spacing.TIME_QUADRATIC:
        a = float(np.sqrt(1.0 / T))
        u = a + fi / denom * (1.0 - a)
        asc = tf.cast(tf.round(T * (u * u) - 1.0), tf.int32)
        asc = tf.where(s > 1, asc, tf.fill([s], T - 1))
    else:
        if schedule is None:
            raise ValueError(f"spacing {spec.value!r} is placed by the schedule's log-SNR: pass schedule=")
        lam = np.asarray(schedule.half_log_snr)
        xp = {"range": lambda n: fi, "maximum": tf.maximum, "log": tf.math.log}
        targets = _lambda_targets(spec, tf.cast(s, tf.float64), *_finite_lambda_range(lam), xp)
        table = tf.constant(np.where(np.isfinite(lam), lam, -1e300), tf.float64)
        asc = tf.cast(tf.argmin(tf.abs(table[None, :] - targets[:, None]), axis=1), tf.int32)
        asc = tf.where(tf.equal(i, s - 1), T - 1, tf.where(tf.equal(i, 0), 0, asc))
        asc = tf.where(s > 1, asc, tf.fill([s], T - 1))
    # c_i = min(max_{j≤i}(a_j − j), T − S) + i
    shifted = asc - i
    lower = i[None, :] <= i[:, None]
    running_max = tf.reduce_max(tf.where(lower, tf.broadcast_to(shifted[None, :], [s, s]), tf.int32.min), axis=1)
    return tf.reverse(tf.minimum(running_max, T - s) + i, [0])
