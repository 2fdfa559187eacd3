"""Where editing starts and how inpainting revisits levels: SDEdit's strength and RePaint's jump schedule.

**Strength (SDEdit, Meng et al. 2022).** Editing with strength s ∈ (0, 1] runs the sampler over the
part of a spaced timestep list τ_0 > … > τ_{S−1} at or below the level s·(T−1):

    kept(τ, s) = [τ_i : τ_i ≤ s·(T−1)]      (compared in float64; s = 1 keeps every τ_i)

x₀ is noised to the first kept level, x_{τ_k} = √ᾱ_{τ_k}·x₀ + √(1−ᾱ_{τ_k})·z (DDPM eq. 4), and the same
loop runs from there. If nothing is kept (s·(T−1) < τ_{S−1}) the edit returns x₀ unchanged. The kept
steps are the *last* K of the list, so step i of an edit is step S−K+i of the plain sampler (same
noise entry). diffusers' img2img instead keeps the last ⌊S·s⌋ entries of its list (a count, not a
level); the two agree whenever the list is evenly spaced and ends at T−1 (``trailing`` with S | T),
and elsewhere differ by at most one step.

**RePaint's jumps (Lugmayr et al. 2022, Algorithm 1 and its ``get_schedule_jump``).** With jump
length j and r resamplings, after reaching every j-th position from the bottom the sampler goes j
positions back up by the forward process, r − 1 times, before continuing down. :func:`repaint_moves`
gives the sequence of list positions p (0 = τ_0, S = the clean level) the sampler visits; a move
p → p+1 is a sampler step, p+1 → p is the forward jump
x_{τ_p} = √(ᾱ_{τ_p}/ᾱ_{τ_{p+1}})·x_{τ_{p+1}} + √(1 − ᾱ_{τ_p}/ᾱ_{τ_{p+1}})·z.
"""

from __future__ import annotations

import numpy as np

__all__ = ["strength_timesteps", "graph_strength_timesteps", "check_strength", "repaint_moves"]


def check_strength(strength) -> float:
    """A Python strength as a float in (0, 1], or a ValueError naming ``strength``."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)):
        raise ValueError(f"strength must be a number in (0, 1], got {strength!r}")
    s = float(strength)
    if not 0.0 < s <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got {strength!r}")
    return s


def strength_timesteps(timesteps, strength: float, num_timesteps: int) -> np.ndarray:
    """The kept part of a descending timestep list: τ_i ≤ s·(T−1) (possibly empty)."""
    taus = np.asarray(timesteps, dtype=np.int64)
    s = check_strength(strength)
    return taus[taus.astype(np.float64) <= s * (num_timesteps - 1)]


def graph_strength_timesteps(timesteps, strength, num_timesteps: int):
    """:func:`strength_timesteps` as graph ops (``strength`` a checked scalar tensor in (0, 1])."""
    import tensorflow as tf

    level = tf.cast(strength, tf.float64) * float(num_timesteps - 1)
    return tf.boolean_mask(timesteps, tf.cast(timesteps, tf.float64) <= level)


def repaint_moves(num_steps: int, jump_length: int = 10, resample: int = 1) -> np.ndarray:
    """The list positions RePaint visits, from 0 (τ_0) to ``num_steps`` (the clean level).

    RePaint's ``get_schedule_jump(t_T=S, jump_length=j, jump_n_sample=r)`` with its times t mapped to
    positions p = S − 1 − t. ``resample`` = 1 is the plain descent 0, 1, …, S.
    """
    for name, value in (("num_steps", num_steps), ("jump_length", jump_length), ("resample", resample)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    jumps = {j: resample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    t, times = num_steps, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    times.append(-1)
    return num_steps - 1 - np.asarray(times, dtype=np.int64)
