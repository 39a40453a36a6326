"""Float64 NumPy references for the estimator tests, written from the textbook formulas.

Deliberately naive (explicit centring matrix, explicit loops over the Song et al. 2012 terms, full sort
for the median) so that they share no code path with `infotok_jax.estimators`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform


def pair_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances of distinct pairs i < j (SciPy's pdist, float64, computed as ||a - b||)."""
    return pdist(np.asarray(x, np.float64))


def median_bandwidth(x: np.ndarray) -> float:
    return float(np.median(pair_distances(x)))


def gram(x: np.ndarray, kernel: str, bandwidth: float | tuple[float, ...]) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sq = squareform(pdist(x, "sqeuclidean"))
    if kernel == "gaussian":
        return np.exp(-sq / (2.0 * bandwidth**2))
    if kernel == "laplacian":
        return np.exp(-np.sqrt(sq) / bandwidth)
    if kernel == "inverse_multiquadric":
        return 1.0 / np.sqrt(1.0 + sq / bandwidth**2)
    if kernel == "linear":
        return x @ x.T
    if kernel == "multiscale":
        return np.mean([np.exp(-sq / (2.0 * b**2)) for b in bandwidth], axis=0)
    raise ValueError(kernel)


def resolve(x: np.ndarray, kernel: str, bandwidth) -> float | tuple[float, ...]:
    if bandwidth != "median":
        return bandwidth
    med = median_bandwidth(x)
    return (0.5 * med, med, 2.0 * med) if kernel == "multiscale" else med


def hsic_biased(k: np.ndarray, g: np.ndarray) -> float:
    """tr(K H L H) / (n - 1)^2 with the explicit centring matrix H."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ g @ h) / (n - 1) ** 2)


def hsic_unbiased(k: np.ndarray, g: np.ndarray) -> float:
    """Song et al. (2012), eq. 5: zero diagonals, then the three-term formula."""
    n = k.shape[0]
    kt, lt = k.copy(), g.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def hsic(
    x,
    y,
    kernel_x="gaussian",
    kernel_y="gaussian",
    bandwidth_x="median",
    bandwidth_y="median",
    estimator="biased",
) -> float:
    k = gram(x, kernel_x, resolve(x, kernel_x, bandwidth_x))
    g = gram(y, kernel_y, resolve(y, kernel_y, bandwidth_y))
    return hsic_biased(k, g) if estimator == "biased" else hsic_unbiased(k, g)


def normalized_hsic(x, y, **kw) -> float:
    kx = {k.replace("_y", "_x"): v for k, v in kw.items() if k.endswith("_x")}
    ky = {k.replace("_x", "_y"): v for k, v in kw.items() if k.endswith("_y")}
    est = kw.get("estimator", "biased")
    xx = hsic(x, x, **kx, **{k.replace("_x", "_y"): v for k, v in kx.items()}, estimator=est)
    yy = hsic(y, y, **ky, **{k.replace("_y", "_x"): v for k, v in ky.items()}, estimator=est)
    return hsic(x, y, **kw) / np.sqrt(xx * yy)


def linear_hsic_features(x: np.ndarray, y: np.ndarray) -> float:
    """||Yc^T Xc||_F^2 / (n - 1)^2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    return float(np.sum((yc.T @ xc) ** 2) / (x.shape[0] - 1) ** 2)


def gaussian_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    return 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=-1)


def categorical_kl(logits: np.ndarray, prior_logits: np.ndarray | None) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    if prior_logits is None:
        p = np.full_like(q, 1.0 / q.shape[-1])
    else:
        pl = np.asarray(prior_logits, np.float64)
        p = np.exp(pl - pl.max(-1, keepdims=True))
        p = np.broadcast_to(p / p.sum(-1, keepdims=True), q.shape)
    return np.sum(np.where(q > 0, q * (np.log(q) - np.log(p)), 0.0), axis=-1)


def dependent_pair(n: int, dx: int = 8, dy: int = 5, seed: int = 0, noise: float = 0.5):
    """x ~ N(0, I); y = tanh(x W) + noise: a dependent float32 pair."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    w = rng.standard_normal((dx, dy)) / np.sqrt(dx)
    y = np.tanh(x @ w) + noise * rng.standard_normal((n, dy))
    return x.astype(np.float32), y.astype(np.float32)
