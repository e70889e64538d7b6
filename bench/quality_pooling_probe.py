"""Does another pooling of the SSIM-luma map track SSIMULACRA2 better than its mean? (bench/QUALITY.md)

Reads bench_quality_metric.py's JSON (its SSIMULACRA2 sweeps) and scores the same encodes with four poolings
of the 8x8-window SSIM map: mean distortion (L1, what perceptual.py uses), L2, L4 and the 95th percentile.
Usage: OMP_NUM_THREADS=1 taskset -c 1 python bench/quality_pooling_probe.py
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import bench_quality_metric as B  # noqa: E402
import numpy as np  # noqa: E402

from imaging import perceptual as P  # noqa: E402

rows = {r["image"]: r for r in json.loads((HERE / "results" / "quality_metric.json").read_text())}
Q = B.QUALITIES


def ssim_map(ref, y):
    mu2 = ref._local(y)
    mu12 = ref.mu * mu2
    mu2_sq = mu2 * mu2
    var2 = ref._local(y * y) - mu2_sq
    cov = ref._local(ref.y * y) - mu12
    return (2 * mu12 + P._C1) * (2 * cov + P._C2) / ((ref.mu_sq + mu2_sq + P._C1) * (ref.var + var2 + P._C2))


variants = {
    "L1": lambda m: 1 - m.mean(),
    "L2": lambda m: np.sqrt(((1 - m) ** 2).mean()),
    "L4": lambda m: (((1 - m) ** 4).mean()) ** 0.25,
    "p95": lambda m: np.percentile(1 - m, 95),
}
curves = {}
for name, full in B.load_images(2.5):
    small = B.shrink(full)
    ref = P.SsimReference(P.luma(small))
    c = {v: [] for v in variants}
    for q in Q:
        y = P.decoded_luma(B.jpeg(small, q))
        m = ssim_map(ref, y)
        for v, f in variants.items():
            c[v].append(float(f(m)))
    curves[name] = c
for target in (70, 80):
    print("S2 target", target)
    for v in variants:
        vals = {}
        for name, c in curves.items():
            s2 = rows[name]["scores"]["s2_fast"]
            q = B.crossing(Q, s2, target)
            if q is None or q == Q[0]:
                continue
            vals[name] = float(np.interp(q, Q, c[v]))  # distortion (lower better) at S2's crossing
        thr = float(np.median(list(vals.values())))
        dis = []
        for name, c in curves.items():
            s2 = rows[name]["scores"]["s2_fast"]
            qs2 = B.crossing(Q, s2, target)
            qv = next((q for q, d in zip(Q, c[v], strict=True) if d <= thr), None)
            dis.append((name, qs2, qv))
        spread = np.log10(max(vals.values()) / min(vals.values()))
        worst = max(abs((a or 100) - (b or 100)) for _, a, b in dis)
        print(
            f"  {v}: thr {thr:.4f} log10(max/min at crossing) {spread:.2f} worst |dq| {worst}  ",
            " ".join(f"{n[:10]}:{a}/{b}" for n, a, b in dis),
        )
