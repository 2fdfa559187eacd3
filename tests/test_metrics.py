"""Sample-quality metrics against cases with known answers; tolerances are derived, not tuned."""

import numpy as np
import pytest

from tfddim.evaluation import metrics
from tfddim.evaluation.metrics import (
    class_accuracy,
    feature_statistics,
    fid,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
    reconstruction_error,
    sfid,
)


def _gauss_fid(mu1, a, mu2, b):
    """Closed form for commuting covariances with eigenvalues a, b (same eigenvectors)."""
    d = np.asarray(mu1) - np.asarray(mu2)
    return float(d @ d + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


# ---------------------------------------------------------------- feature statistics / FID


def test_feature_statistics_is_mean_and_unbiased_covariance():
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = feature_statistics(x)
    np.testing.assert_array_equal(mu, [2.0, 4.0])
    # by hand: deviations (-2,-3), (0,-1), (2,4); sums of products / (N-1 = 2)
    np.testing.assert_allclose(sigma, [[8.0 / 2, 14.0 / 2], [14.0 / 2, 26.0 / 2]], rtol=1e-15)
    assert mu.dtype == np.float64 and sigma.shape == (2, 2)
    _, s1 = feature_statistics(np.array([[1.0], [3.0]]))  # D = 1 still gives [1, 1]
    assert s1.shape == (1, 1) and s1[0, 0] == 2.0


def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((500, 16)) * np.linspace(0.5, 3.0, 16)
    _, sigma = feature_statistics(x)
    # sqrtm(S S) = S up to rounding: error ~ 1e-16 x cond(S)(~40) x D per trace entry,
    # far below the 1e-8 x Tr(S) allowed.
    assert abs(fid(x, x)) <= 1e-8 * np.trace(sigma)


def test_frechet_distance_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1.0 + 0.0 + 6.25 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0.0  # = 12.25 by hand
    assert expected == _gauss_fid(mu1, a, mu2, b) == 12.25
    # diagonal sqrtm is exact to a few ulps: 1e-12 relative is ~4000 ulps of slack
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(12.25, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_commuting_closed_form(seed):
    rng = np.random.default_rng(seed)
    d = 6
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.5, 3.0, d), rng.uniform(0.5, 3.0, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = _gauss_fid(mu1, a, mu2, b)
    # S1 S2 = Q diag(ab) Qᵀ has condition <= 36; sqrtm's backward error ~ eps x cond
    # ~ 1e-14, times traces of order 10: 1e-9 absolute leaves a wide margin.
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, abs=1e-9)  # symmetric


def test_fid_of_large_samples_approaches_closed_form():
    """fid on N samples of N(mu1, diag a) and N(mu2, diag b) vs the closed form F.

    Error budget (delta method around the true parameters, errors e_mu ~ N(0, S/N) and
    dS_ii with Var = 2 S_ii² / (N-1)):
      bias of ||xbar1 - xbar2||²:                         (Tr A + Tr B) / N, added exactly;
      first order:  dF = 2 dmuᵀ(e1 - e2) + Σ_i (1 - sqrt(b_i/a_i)) dA_ii + (1 - sqrt(a_i/b_i)) dB_ii,
        (d Tr (AB)^{1/2} = ½ Tr((AB)^{-1/2} B dA) at commuting A, B), Gaussian with
        var1 = 4 dmuᵀ(A + B)dmu / N + Σ_i 2 a_i (sqrt a_i - sqrt b_i)² / N + (same with a <-> b);
        allowed: 5 sigma (two-sided p < 6e-7).
      second order: at most curvature x E||dS||_F²; the curvature of a - 2 sqrt(ab) in a is
        ½ sqrt(b) a^{-3/2} and E||dS||_F² = Σ_ij (S_ii S_jj + S_ij²)/N <= D(D+1) max(S)²/N;
        allowed: 5 x that bound for each of the two sets (a sum of D² squared errors rarely
        exceeds 5 x its mean).
    """
    n, rng = 200_000, np.random.default_rng(7)
    mu1, mu2 = np.array([0.0, 1.0, 0.0, -0.5]), np.array([0.5, 0.0, 0.3, -0.5])
    a, b = np.array([1.0, 2.0, 1.5, 1.0]), np.array([2.0, 1.0, 1.0, 3.0])
    x = mu1 + np.sqrt(a) * rng.standard_normal((n, 4))
    y = mu2 + np.sqrt(b) * rng.standard_normal((n, 4))
    dmu = mu1 - mu2
    d = 4
    exact = _gauss_fid(mu1, a, mu2, b)
    bias = (a.sum() + b.sum()) / n
    var1 = (4 * dmu @ ((a + b) * dmu) + np.sum(2 * a * (np.sqrt(a) - np.sqrt(b)) ** 2)
            + np.sum(2 * b * (np.sqrt(b) - np.sqrt(a)) ** 2)) / n
    smax = max(a.max(), b.max())
    curv = 0.5 * np.sqrt(smax) / min(a.min(), b.min()) ** 1.5
    second = 2 * 5 * curv * d * (d + 1) * smax**2 / n
    tol = 5 * np.sqrt(var1) + second
    assert tol < 0.05 * exact  # the bound is tight enough to mean something (~4 % here)
    assert abs(fid(x, y) - (exact + bias)) <= tol


def test_frechet_distance_singular_product_falls_back_to_eps(monkeypatch):
    real = metrics._sqrtm
    calls = []

    def flaky(m):
        calls.append(m)
        return np.full_like(m, np.inf) if len(calls) == 1 else real(m)

    monkeypatch.setattr(metrics, "_sqrtm", flaky)
    a, b = np.array([1.0, 0.0]), np.array([4.0, 0.0])  # singular covariances
    value = frechet_distance(np.zeros(2), np.diag(a), np.zeros(2), np.diag(b))
    assert len(calls) == 2
    # As in pytorch-fid / TTUR, eps·I enters only the square root, not Tr S1 + Tr S2:
    # value = Σ a + Σ b - 2 Σ sqrt((a + eps)(b + eps)) = 5 - 2 (sqrt(1·4 + 5e-6 + 1e-12) + 1e-6).
    eps = 1e-6
    expected = a.sum() + b.sum() - 2 * np.sum(np.sqrt((a + eps) * (b + eps)))
    assert expected == pytest.approx(1.0 - 2 * (1.25e-6 + 1e-6), abs=1e-11)
    assert value == pytest.approx(expected, abs=1e-12)


def test_frechet_distance_imaginary_part(monkeypatch):
    s = np.eye(2)
    monkeypatch.setattr(metrics, "_sqrtm", lambda m: np.eye(2) + 1e-6j * np.eye(2))
    assert frechet_distance(np.zeros(2), s, np.zeros(2), s) == pytest.approx(0.0, abs=1e-15)
    monkeypatch.setattr(metrics, "_sqrtm", lambda m: np.eye(2) + 1e-2j * np.eye(2))
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), s, np.zeros(2), s)


def test_fid_is_finite_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(3)  # rank-deficient covariances (N=10 < D=50): real-world FID case
    value = fid(rng.standard_normal((10, 50)), rng.standard_normal((10, 50)))
    assert np.isfinite(value) and value > 0


def test_fid_errors():
    with pytest.raises(ValueError, match="features"):
        feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="sigma1 and sigma2"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="features_a and features_b dimension"):
        fid(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="features_b must be 2-D"):
        fid(np.zeros((4, 2)), np.zeros(4))


def test_sfid_is_the_frechet_distance_of_spatial_features():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((300, 12)) * np.linspace(0.5, 2.0, 12)
    b = np.roll(a, 1, axis=1)  # the same values, one position over: per-dimension statistics move
    assert sfid(a, b) == fid(a, b) and sfid(a, b) > 1.0
    _, sigma = feature_statistics(a)
    assert abs(sfid(a, a)) <= 1e-8 * np.trace(sigma)
    with pytest.raises(ValueError, match="spatial_a and spatial_b dimension"):
        sfid(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="spatial_b must be 2-D"):
        sfid(np.zeros((4, 2)), np.zeros((4, 2, 1)))


# ---------------------------------------------------------------- KID


def _poly_kernel_mean(mx, my, d):
    """E (xᵀy/d + 1)³ for independent x ~ N(mx, I), y ~ N(my, I), in closed form.

    s = xᵀy given x is N(xᵀmy, |x|²); with c = mxᵀmy:
      E s = c,  E s² = c² + |mx|² + |my|² + d,  E s³ = c³ + 3c (|mx|² + |my|² + d + 2).
    """
    c, p = mx @ my, mx @ mx + my @ my
    s1, s2, s3 = c, c**2 + p + d, c**3 + 3 * c * (p + d + 2)
    return 1 + 3 * s1 / d + 3 * s2 / d**2 + s3 / d**3


def _population_mmd2(mx, my, d):
    return _poly_kernel_mean(mx, mx, d) + _poly_kernel_mean(my, my, d) - 2 * _poly_kernel_mean(mx, my, d)


@pytest.mark.parametrize("shift", [0.0, 0.25])
def test_kid_is_unbiased(shift):
    """R independent replicates (fresh data, one subset = the whole sets of m points each).

    MMD²_u is unbiased, so by the CLT the replicate mean lies within 4 standard errors
    (std / sqrt R) of the population MMD² (closed form above) with probability > 0.9999.
    Power: keeping the diagonal k(x_i, x_i) would add about 2 (E k(x,x) - E k(x,x'))/m
    = 2 (9.625 - 1.375)/50 = 0.33 at d = 8 (chi-square moments), checked to be > 10 SE.
    """
    d, m, reps = 8, 50, 200
    mx, my = np.zeros(d), np.full(d, shift)
    rng = np.random.default_rng(11)
    vals = np.array([
        kid(rng.standard_normal((m, d)), my + rng.standard_normal((m, d)), num_subsets=1, subset_size=m)[0]
        for _ in range(reps)
    ])
    se = vals.std(ddof=1) / np.sqrt(reps)
    target = _population_mmd2(mx, my, d)
    assert (target == 0.0) == (shift == 0.0)
    assert abs(vals.mean() - target) <= 4 * se
    assert 2 * (9.625 - 1.375) / m > 10 * se


def test_kid_closed_form_helper_matches_monte_carlo():
    # guard for the closed form used above: n = 250 000 independent pairs per case, the sample
    # mean is within 5 standard errors (k.std / sqrt n) of E k with probability > 0.99999.
    d, n, rng = 8, 250_000, np.random.default_rng(5)
    for mx, my in [(np.zeros(d), np.full(d, 0.25)), (np.full(d, 0.25), np.full(d, 0.25)),
                   (np.linspace(-1, 1, d), np.full(d, 0.5))]:
        x = mx + rng.standard_normal((n, d))
        y = my + rng.standard_normal((n, d))
        k = (np.sum(x * y, axis=1) / d + 1) ** 3
        assert abs(k.mean() - _poly_kernel_mean(mx, my, d)) <= 5 * k.std() / np.sqrt(n)


def test_kid_detects_a_shift_and_is_symmetric():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((400, 8))
    b = 0.5 + rng.standard_normal((400, 8))
    # Full sets (m = N): every subset is a permutation, and MMD²_u is permutation invariant,
    # so the std over subsets is 0 up to rounding (this also shows sampling is without
    # replacement) and swapping the sets gives the same number.
    mean_ab, std_ab = kid(a, b, num_subsets=3, subset_size=400)
    mean_ba, _ = kid(b, a, num_subsets=1, subset_size=400)
    assert std_ab <= 1e-12 * abs(mean_ab)
    assert mean_ab == pytest.approx(mean_ba, rel=1e-12)
    # population MMD² here is 3v/d + 3v²/d² + (v³ + 6v² + 3v(d+2))/d³ = 1.117 (v = |shift|² = 2);
    # sub-sampled KID must be far above 0 relative to its spread over subsets.
    mean, std = kid(a, b, num_subsets=20, subset_size=100)
    assert _population_mmd2(np.zeros(8), np.full(8, 0.5), 8) == pytest.approx(1.1172, abs=1e-4)
    assert mean > 5 * std / np.sqrt(20) and mean > 0.5


def test_kid_is_deterministic_in_seed():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
    assert kid(a, b, num_subsets=5, subset_size=50, seed=1) == kid(a, b, num_subsets=5, subset_size=50, seed=1)
    assert kid(a, b, num_subsets=5, subset_size=50, seed=1) != kid(a, b, num_subsets=5, subset_size=50, seed=2)


def test_kid_errors():
    with pytest.raises(ValueError, match="subset size m"):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="subset size m"):
        kid(np.zeros((5, 3)), np.zeros((5, 3)), subset_size=1)
    with pytest.raises(ValueError, match="num_subsets"):
        kid(np.zeros((5, 3)), np.zeros((5, 3)), num_subsets=0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        kid(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="features_a must be 2-D"):
        kid(np.zeros(5), np.zeros((5, 2)))


# ---------------------------------------------------------------- precision / recall


def test_format_kid_is_x1000_with_its_spread_and_says_when_unresolved():
    # the newcomer's cell: raw -0.1199 ± 1.0497 is not told apart from 0
    assert metrics.format_kid(-0.1199, 1.0497) == "unresolved (-120 ± 1050)"
    # resolved (|mean| >= 2 std), three significant figures of the larger of the two, ×10³
    assert metrics.format_kid(0.00321, 0.00045) == "3.21 ± 0.45"
    assert metrics.format_kid(0.0123, 0.0061) == "12.3 ± 6.1"
    assert metrics.format_kid(-0.004, 0.001) == "-4.00 ± 1.00"  # resolved below 0 (a biased reference, say)
    assert metrics.format_kid(0.002, 0.001) == "2.00 ± 1.00"  # exactly 2 std: resolved
    assert metrics.format_kid(0.0019, 0.001).startswith("unresolved")
    assert metrics.format_kid(0.0, 0.0) == "0.00 ± 0.00"
    assert metrics.format_kid(0.5, 0.1, scale=1.0) == "0.500 ± 0.100"
    assert metrics.format_kid(float("nan"), 0.1) == "nan ± 100"


def test_raw_kid_columns_rename_only_kid_and_keep_the_order():
    row = {"sampler": "a", "fid": 1.0, "kid": -0.1199, "kid_std": 1.0497, "precision": 0.5}
    assert list(metrics.raw_kid_columns(row).items()) == [
        ("sampler", "a"), ("fid", 1.0), ("kid_raw", -0.1199), ("kid_std_raw", 1.0497), ("precision", 0.5)]


def test_precision_recall_by_hand_1d():
    # real = {0, 1, 3}, k = 1: radii (nearest other point) 1, 1, 2 -> balls [-1, 1], [0, 2], [1, 5].
    real = np.array([[0.0], [1.0], [3.0]])
    fake = np.array([[1.5], [5.0], [5.5], [-1.5]])  # inside, on the boundary (<=), outside, outside
    # fake radii (k = 1): 3.0, 0.5, 0.5, 3.0 -> balls [-1.5, 4.5], [4.5, 5.5], [5, 6], [-4.5, 1.5]
    # hold all of 0, 1, 3: recall 1.
    p, r = precision_recall(real, fake, k=1)
    assert p == 2 / 4 and r == 1.0
    # k = 2: real radii 3, 2, 3 -> balls [-3, 3], [-1, 3], [0, 6] hold all four fake points.
    p2, _ = precision_recall(real, fake, k=2)
    assert p2 == 4 / 4


def test_precision_recall_identical_and_far_apart():
    x = np.random.default_rng(0).standard_normal((300, 5))
    assert precision_recall(x, x.copy(), k=5) == (1.0, 1.0)  # every point is its own ball's centre
    # radii are at most the set's diameter (< 2 x 8 x sqrt 5 ~ 36 for |z| < 8) << separation 1000
    assert precision_recall(x, x + 1000.0, k=5) == (0.0, 0.0)


def test_precision_recall_mode_dropping():
    """Real: two clusters of n points at ±50 (std 1, D = 2); fake: exactly the points of one.

    Every fake point is a real point (distance 0 <= its radius): precision = 1 exactly. Real
    points of the covered cluster are fake points: inside; the other cluster is >= 100 - 2 x 8
    away (|z| < 8 for all 2000 normals) while fake radii are < the cluster diameter 2 x 8 x sqrt 2:
    outside. So recall = n / 2n = 1/2 exactly, whatever the draw.
    """
    n, rng = 500, np.random.default_rng(1)
    left = np.array([-50.0, 0.0]) + rng.standard_normal((n, 2))
    right = np.array([50.0, 0.0]) + rng.standard_normal((n, 2))
    assert np.abs(np.concatenate([left, right]) - np.array([[-50.0, 0.0]] * n + [[50.0, 0.0]] * n)).max() < 8
    real = np.concatenate([left, right])
    assert precision_recall(real, right, k=5) == (1.0, 0.5)
    # the swapped roles: fake covers both clusters, real one -> precision 1/2, recall 1
    assert precision_recall(right, real, k=5) == (0.5, 1.0)


def test_precision_recall_batching_does_not_change_the_answer(monkeypatch):
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((230, 3)), 0.3 + rng.standard_normal((170, 3))
    whole = precision_recall(real, fake, k=3)
    monkeypatch.setattr(metrics, "_BATCH_ROWS", 7)  # blocks that do not divide N
    assert precision_recall(real, fake, k=3) == whole
    assert 0.0 < whole[0] < 1.0 and 0.0 < whole[1] < 1.0


def test_precision_recall_errors():
    x = np.zeros((6, 2))
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="k must be < the size"):
        precision_recall(x, x[:3], k=3)
    with pytest.raises(ValueError, match="dimension mismatch"):
        precision_recall(x, np.zeros((6, 3)))
    with pytest.raises(ValueError, match="real_features must be 2-D"):
        precision_recall(np.zeros(6), x)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_one_hot_uniform_is_num_classes():
    c, n, big = 10, 1000, 50.0
    logits = big * np.eye(c)[np.arange(n) % c]  # each split of 100 rows holds 10 of every class
    mean, std = inception_score(logits, num_splits=10)
    # p(true) = 1/(1 + 9e^-50): KL = log C - O(C·50·e^-50) ~ 1e-19 -> IS = C to rounding.
    assert mean == pytest.approx(c, rel=1e-12) and std <= 1e-12


def test_inception_score_identical_predictions_is_one():
    logits = np.tile(np.array([[0.3, -1.0, 2.0, 0.0]]), (40, 1))  # p(y|x) = p(y): KL = 0
    mean, std = inception_score(logits, num_splits=4)
    assert mean == pytest.approx(1.0, abs=1e-14) and std <= 1e-14


def test_inception_score_by_hand_and_shift_invariant():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])  # p(y) = (0.7, 0.3)
    kl1 = 0.5 * np.log(0.5 / 0.7) + 0.5 * np.log(0.5 / 0.3)
    kl2 = 0.9 * np.log(0.9 / 0.7) + 0.1 * np.log(0.1 / 0.3)
    expected = np.exp((kl1 + kl2) / 2)
    assert inception_score(np.log(p), num_splits=1)[0] == pytest.approx(expected, rel=1e-13)
    # softmax is shift invariant per row; 1000 would overflow a naive exp
    shifted = np.log(p) + np.array([[1000.0], [-700.0]])
    assert inception_score(shifted, num_splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_inception_score_splits_are_consecutive_rows():
    logits = 40.0 * np.eye(2)[[0] * 50 + [1] * 50]
    assert inception_score(logits, num_splits=1)[0] == pytest.approx(2.0, rel=1e-12)
    mean, std = inception_score(logits, num_splits=2)  # each half is a single class: IS = 1
    assert mean == pytest.approx(1.0, abs=1e-12) and std <= 1e-12
    # np.array_split with 3 splits of 100: sizes 34, 33, 33; the middle one mixes 16 + 17 rows
    mean3, _ = inception_score(logits, num_splits=3)
    q = 16 / 33
    middle = np.exp(-(q * np.log(q) + (1 - q) * np.log(1 - q)))
    assert mean3 == pytest.approx((1 + middle + 1) / 3, rel=1e-12)


def test_inception_score_errors():
    with pytest.raises(ValueError, match="num_splits"):
        inception_score(np.zeros((5, 3)), num_splits=0)
    with pytest.raises(ValueError, match="num_splits"):
        inception_score(np.zeros((5, 3)), num_splits=6)
    with pytest.raises(ValueError, match="logits must be 2-D"):
        inception_score(np.zeros(5), num_splits=1)


# ---------------------------------------------------------------- accuracy / reconstruction


def test_class_accuracy():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [5.0, 4.0]])
    assert class_accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert class_accuracy(logits, [1, 0, 1, 0]) == 1.0
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(logits, [1, 0, 1])
    with pytest.raises(ValueError, match="logits must be 2-D"):
        class_accuracy(np.zeros(4), [0, 0, 0, 0])


def test_reconstruction_error():
    x = np.zeros((2, 2))
    x_rec = np.array([[0.1, -0.2], [0.0, 0.0]])
    out = reconstruction_error(x, x_rec)
    rmse = np.sqrt((0.01 + 0.04) / 4)  # = 0.1118...
    assert out["rmse"] == pytest.approx(rmse, rel=1e-15)
    assert out["max_abs"] == pytest.approx(0.2, rel=1e-15)
    assert out["psnr"] == pytest.approx(20 * np.log10(2.0 / rmse), rel=1e-14)
    assert reconstruction_error(x, x_rec, data_range=1.0)["psnr"] == pytest.approx(out["psnr"] - 20 * np.log10(2.0))
    # rmse 0.01 on [-1, 1] data: 20 log10(200) = 46.02 dB
    assert reconstruction_error(x, x + 0.01)["psnr"] == pytest.approx(20 * np.log10(200), rel=1e-12)
    assert reconstruction_error(x, x) == {"rmse": 0.0, "max_abs": 0.0, "psnr": float("inf")}
    with pytest.raises(ValueError, match="x and x_rec shape mismatch"):
        reconstruction_error(x, np.zeros(4))
    with pytest.raises(ValueError, match="data_range"):
        reconstruction_error(x, x, data_range=0.0)
