"""Blur kernels for real-world degradations (Wang et al. 2021, *Real-ESRGAN*, section 3).

Pure numpy: each function returns a square, odd-sized float32 kernel that sums to 1. With the
covariance Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T and q(x) = x^T Sigma^-1 x:

- Gaussian: exp(-q / 2); isotropic when sigma_x == sigma_y (theta then does nothing);
- generalised Gaussian: exp(-q^beta / 2), a flatter top (beta > 1) or heavier tails (beta < 1);
- plateau: 1 / (1 + q^beta), a flat top with long tails;
- sinc: the ideal circular low-pass with cut-off omega (radians per pixel): its ripples put the
  ringing and overshoot around edges that real resizing and sharpening leave.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("gaussian", "generalized", "plateau")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(ax, ax)


def anisotropic_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0,
                       shape: str = "gaussian", beta: float = 1.0) -> np.ndarray:
    """A ``shape`` kernel (``SHAPES``) with axes ``sigma_x``, ``sigma_y`` turned by ``theta`` radians."""
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"kernel sigmas must be positive, got {sigma_x}, {sigma_y}")
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy  # coordinates along the kernel's own axes
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        k = np.exp(-0.5 * q)
    elif shape == "generalized":
        k = np.exp(-0.5 * q**beta)
    elif shape == "plateau":
        k = 1.0 / (1.0 + q**beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}; known: {', '.join(SHAPES)}")
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """The circular low-pass filter with cut-off ``omega`` in (0, pi], truncated to ``size``."""
    from scipy.special import j1  # here: 0.3 s to import, and the settings schema imports this module

    if not 0 < omega <= math.pi:
        raise ValueError(f"sinc cut-off must be in (0, pi], got {omega}")
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega * j1(omega * r) / (2 * math.pi * r)
    k[r == 0] = omega**2 / (4 * math.pi)  # the limit at the centre
    return (k / k.sum()).astype(np.float32)
