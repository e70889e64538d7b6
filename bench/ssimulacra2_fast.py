"""SSIMULACRA2 in vectorised float32 numpy + scipy: the `ssimulacra2` package's algorithm, 2-3x faster.

The package (0.3.0, pure Python) loops over edge pixels in Python and works in float64; this port keeps its
steps (sRGB -> linear -> XYB, 6 scales, sigma 1.5 blur with zero padding top/bottom and reflection left/right,
SSIM and edge-difference maps, L1 and L4 norms, its 108 weights and final polynomial) and is checked against
it by bench_quality_metric.py (`check` column of QUALITY.md). Bench only: it needs scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from ssimulacra2.ssimulacra2 import kOpsinAbsorbanceBias, kOpsinAbsorbanceMatrix, weights

_M = kOpsinAbsorbanceMatrix.reshape(3, 3).astype(np.float32)
_B = kOpsinAbsorbanceBias.astype(np.float32)
_CBRT_B = np.cbrt(_B)
_C2 = np.float32(0.0009)


def _linear(rgb8: np.ndarray) -> np.ndarray:
    lut = np.arange(256, dtype=np.float64) / 255.0
    lut = np.where(lut <= 0.04045, lut / 12.92, ((lut + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return lut[rgb8]


def _xyb(lin: np.ndarray) -> list[np.ndarray]:
    mixed = np.maximum(lin @ _M.T + _B, 0)
    mixed = np.cbrt(mixed) - _CBRT_B
    x = 0.5 * (mixed[..., 0] - mixed[..., 1])
    y = 0.5 * (mixed[..., 0] + mixed[..., 1])
    b = mixed[..., 2]
    return [x * 14.0 + 0.42, y + 0.01, (b - y) + 0.55]


def _down(img: np.ndarray) -> np.ndarray:
    h, w, c = img.shape
    if h % 2:
        img = np.concatenate([img, img[-1:]], axis=0)  # the package averages the lone edge row by itself
    if w % 2:
        img = np.concatenate([img, img[:, -1:]], axis=1)
    return img.reshape(img.shape[0] // 2, 2, img.shape[1] // 2, 2, c).mean(axis=(1, 3))


def _blur(a: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(a, sigma=1.5, truncate=3.33, mode=("constant", "reflect"), cval=0.0)


def _norms(d: np.ndarray) -> tuple[float, float]:
    d4 = d * d
    d4 *= d4
    return float(d.mean(dtype=np.float64)), float(d4.mean(dtype=np.float64) ** 0.25)


def ssimulacra2(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Score of two HxWx3 uint8 sRGB arrays; 100 = identical, 90 visually lossless, 70 high quality."""
    lin1, lin2 = _linear(reference), _linear(distorted)
    scales = []
    for scale in range(6):
        if lin1.shape[0] < 8 or lin1.shape[1] < 8:
            break
        if scale:
            lin1, lin2 = _down(lin1), _down(lin2)
        img1, img2 = _xyb(lin1), _xyb(lin2)
        ssim, edge = [], []
        for p1, p2 in zip(img1, img2, strict=True):
            mu1, mu2 = _blur(p1), _blur(p2)
            s11, s22, s12 = _blur(p1 * p1), _blur(p2 * p2), _blur(p1 * p2)
            m11, m22, m12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
            num_m = 1.0 - (mu1 - mu2) ** 2
            d = 1.0 - num_m * (2.0 * (s12 - m12) + _C2) / ((s11 - m11) + (s22 - m22) + _C2)
            ssim.append(_norms(np.maximum(d, 0.0)))
            d1 = (1.0 + np.abs(p2 - mu2)) / (1.0 + np.abs(p1 - mu1)) - 1.0
            edge.append((*_norms(np.maximum(d1, 0.0)), *_norms(np.maximum(-d1, 0.0))))
        scales.append((ssim, edge))
    total, i = 0.0, 0
    for c in range(3):
        for ssim, edge in scales:
            for n in range(2):
                total += weights[i] * abs(ssim[c][n])
                total += weights[i + 1] * abs(edge[c][n])
                total += weights[i + 2] * abs(edge[c][n + 2])
                i += 3
    total *= 0.9562382616834844
    total = 2.326765642916932 * total - 0.020884521182843837 * total**2 + 6.248496625763138e-05 * total**3
    return 100.0 - 10.0 * total**0.6276336467831387 if total > 0 else 100.0
