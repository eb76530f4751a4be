"""Slow, obvious NumPy twins of the Numba kernels in ``balllink._kernels``.

Written for clarity, not speed: loops and whole-array NumPy, no shared code with the
kernels. ``tests/test_kernels.py`` checks each kernel against its twin.
"""

from __future__ import annotations

import math

import numpy as np


def rotate_nearest(img, angle_deg, cy, cx):
    """CImg nearest-neighbour rotation (single-precision coordinates), NaN outside."""
    ny, nx = img.shape
    rad = np.float32(angle_deg * math.pi / 180.0)
    ca, sa = np.float32(math.cos(rad)), np.float32(math.sin(rad))
    r, c = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32),
                       indexing="ij")  # fmt: skip
    xc = c - np.float32(cx)
    yc = r - np.float32(cy)
    xs = np.float32(cx) + xc * ca + yc * sa
    ys = np.float32(cy) - xc * sa + yc * ca
    ix = np.floor(xs + np.float32(0.5)).astype(int)
    iy = np.floor(ys + np.float32(0.5)).astype(int)
    out = np.full((ny, nx), np.nan, np.float32)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    out[ok] = img[iy[ok], ix[ok]]
    return out


def warp_rigid(img, out_ny, out_nx, angle_deg, cy_in, cx_in, cy_out, cx_out, dy, dx):
    """Bilinear rigid warp, NaN when any neighbour of non-zero weight is NaN or outside."""
    ny, nx = img.shape
    t = math.radians(angle_deg)
    out = np.full((out_ny, out_nx), np.nan, np.float32)
    for r in range(out_ny):
        for c in range(out_nx):
            qy, qx = r - cy_out - dy, c - cx_out - dx
            ys = cy_in + math.cos(t) * qy + math.sin(t) * qx
            xs = cx_in - math.sin(t) * qy + math.cos(t) * qx
            y0, x0 = math.floor(ys), math.floor(xs)
            fy, fx = ys - y0, xs - x0
            total, bad = 0.0, False
            for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                    if wy <= 1e-6 or wx <= 1e-6:
                        continue
                    if not (0 <= yy < ny and 0 <= xx < nx) or np.isnan(img[yy, xx]):
                        bad = True
                    else:
                        total += wy * wx * img[yy, xx]
            out[r, c] = np.nan if bad else total
    return out


def warp_stack(img, out_ny, out_nx, angles_deg, cy_in, cx_in, cy_out, cx_out, dy, dx):
    return np.stack(
        [
            warp_rigid(img, out_ny, out_nx, a, cy_in, cx_in, cy_out, cx_out, dy, dx)
            for a in angles_deg
        ]
    )


def pearson(x, y):
    """Pearson correlation over the jointly finite entries (NaN if undefined)."""
    x = np.asarray(x, float).ravel()
    y = np.asarray(y, float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return np.nan
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = math.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else np.nan


def index_corr(cells, regions, ridx, cidx):
    out = np.full(cells.shape[0], np.nan)
    for k in range(cells.shape[0]):
        vals = []
        for v in range(ridx.shape[1]):
            if ridx[k, v, 0] == -2:
                continue
            reg = regions[k]
            win = np.full(cells[k].shape, np.nan)
            for i, ri in enumerate(ridx[k, v]):
                for j, cj in enumerate(cidx[k, v]):
                    if 0 <= ri < reg.shape[0] and 0 <= cj < reg.shape[1]:
                        win[i, j] = reg[ri, cj]
            vals.append(pearson(cells[k], win))
        vals = [x for x in vals if np.isfinite(x)]
        if vals:
            out[k] = max(vals)
    return out


def _ncc_map(cells, regions, min_n):
    """Masked NCC of each cell at every offset inside its region (the twin of the search
    inside `cell_search`): Pearson over the jointly finite pixels, NaN below ``min_n`` of
    them or where either side is constant."""
    n, h, w = cells.shape
    _, hh, ww = regions.shape
    out = np.full((n, hh - h + 1, ww - w + 1), np.nan, np.float32)
    for k in range(n):
        for oy in range(hh - h + 1):
            for ox in range(ww - w + 1):
                win = regions[k, oy : oy + h, ox : ox + w]
                joint = np.isfinite(cells[k]) & np.isfinite(win)
                if joint.sum() >= max(min_n[k], 2):
                    x, y = cells[k][joint].astype(float), win[joint].astype(float)
                    if x.std() > 1e-6 * max(1.0, abs(x).max()) and y.std() > 1e-6 * max(
                        1.0, abs(y).max()
                    ):
                        out[k, oy, ox] = pearson(x, y)
    return out


def cell_search(cells, stack, r0, c0, margin, min_n):
    n, h, w = cells.shape
    nt = stack.shape[0]
    dy = np.zeros((nt, n), int)
    dx = np.zeros((nt, n), int)
    corr = np.full((nt, n), np.nan)
    for t in range(nt):
        regions = np.stack(
            [stack[t, a : a + h + 2 * margin, b : b + w + 2 * margin] for a, b in zip(r0, c0)]
        )
        ncc = _ncc_map(cells, regions, min_n)
        for k in range(n):
            m = ncc[k]
            if np.isfinite(m).any():
                a, b = np.unravel_index(np.nanargmax(m), m.shape)
                corr[t, k] = m[a, b]
                dy[t, k], dx[t, k] = a - margin, b - margin
    return dy, dx, corr


def high_cmc_candidates(dx, dy, corr, present, t_xy, t_corr):
    cand = np.zeros(dx.shape, bool)
    for t in range(dx.shape[0]):
        p = present[t]
        if not p.any():
            continue
        mx, my = np.median(dx[t][p]), np.median(dy[t][p])
        with np.errstate(invalid="ignore"):
            cand[t] = (
                p
                & (corr[t] >= t_corr)
                & (np.abs(dx[t] - mx) <= t_xy)
                & (np.abs(dy[t] - my) <= t_xy)
            )
    return cand


def original_cmc(dx, dy, theta, corr, present, t_xy, t_theta, t_corr):
    c = np.where(present & np.isfinite(corr), corr, -np.inf)
    best = c.max(axis=0)
    keep = present & (c == best[None, :]) & np.isfinite(best)[None, :]
    out = np.zeros(dx.shape, bool)
    if not keep.any():
        return out
    th = np.broadcast_to(np.asarray(theta, float)[:, None], dx.shape)
    mx, my, mt = np.median(dx[keep]), np.median(dy[keep]), np.median(th[keep])
    return (
        keep
        & (c >= t_corr)
        & (np.abs(dx - mx) <= t_xy)
        & (np.abs(dy - my) <= t_xy)
        & (np.abs(th - mt) <= t_theta)
    )


def gathered_argmax(maps, ridx, cidx, nr, nc):
    qr = np.full(maps.shape[0], -1)
    qc = np.full(maps.shape[0], -1)
    for k in range(maps.shape[0]):
        sub = maps[k][np.ix_(ridx[k, : nr[k]], cidx[k, : nc[k]])]
        if np.isfinite(sub).any():
            qr[k], qc[k] = np.unravel_index(np.nanargmax(sub), sub.shape)
    return qr, qc


def cmcr_regions(rot, geom, max_missing, rbuf, rnan):
    used = np.zeros(geom.shape[0], bool)
    for i, (r0, r1, c0, c1, orr, occ, h, w) in enumerate(geom):
        if h <= 0:
            continue
        region = np.full((h, w), np.nan)
        region[orr : orr + r1 - r0 + 1, occ : occ + c1 - c0 + 1] = rot[r0 : r1 + 1, c0 : c1 + 1]
        if np.isnan(region).mean() > max_missing:
            continue
        used[i] = True
        v = region[np.isfinite(region)]
        z = np.full((h, w), np.nan)
        if v.size >= 2 and v.std(ddof=1) > 0:
            z = (region - v.mean()) / v.std(ddof=1)
        rnan[i] = np.nan
        rnan[i, :h, :w] = z
        rbuf[i, :h, :w] = np.nan_to_num(z, nan=0.0)
    return used
