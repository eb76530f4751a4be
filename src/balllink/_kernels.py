"""Numba kernels of the CMC comparison (no validation: see balllink.comparison for the wrappers).

Arrays in, arrays out. NaN marks a missing height everywhere. Every kernel here has a slow,
obvious NumPy twin in ``tests/reference.py``; ``tests/test_kernels.py`` compares them on
random, NaN-holed and constant inputs.

Conventions: images are ``(row, col)``; a rotation by ``angle_deg`` about ``(cy, cx)`` maps
the output pixel ``(r, c)`` to the input point
``(cy - (c - cx) sin a + (r - cy) cos a, cx + (c - cx) cos a + (r - cy) sin a)``, the
mapping of CImg's ``rotate`` (used by cmcR through imager) with x = column, y = row.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "cell_search",
    "cmcr_regions",
    "gathered_argmax",
    "high_cmc_candidates",
    "index_corr",
    "original_cmc",
    "rotate_nearest",
    "warp_rigid",
    "warp_stack",
]


@njit(cache=True, nogil=True)
def rotate_nearest(img, angle_deg, cy, cx):
    """Nearest-neighbour rotation as CImg (imager) does it; NaN outside the input."""
    ny, nx = img.shape
    out = np.empty((ny, nx), dtype=np.float32)
    # CImg computes the angle and the products in single precision
    rad = np.float32(angle_deg * math.pi / 180.0)
    ca = np.float32(math.cos(rad))
    sa = np.float32(math.sin(rad))
    fcx = np.float32(cx)
    fcy = np.float32(cy)
    for r in range(ny):
        yc = np.float32(r) - fcy
        for c in range(nx):
            xc = np.float32(c) - fcx
            xs = fcx + xc * ca + yc * sa
            ys = fcy - xc * sa + yc * ca
            ix = math.floor(xs + np.float32(0.5))
            iy = math.floor(ys + np.float32(0.5))
            if 0 <= ix < nx and 0 <= iy < ny:
                out[r, c] = img[iy, ix]
            else:
                out[r, c] = np.nan
    return out


@njit(cache=True)
def warp_rigid(img, out_ny, out_nx, angle_deg, cy_in, cx_in, cy_out, cx_out, dy, dx):
    """Bilinear rigid warp: ``img`` rotated by ``angle_deg`` then shifted by ``(dy, dx)``.

    The output pixel ``q`` (relative to ``(cy_out, cx_out)``) takes the input at
    ``(cy_in, cx_in) + R(-angle) (q - (dy, dx))`` where ``R(t)`` maps ``(y, x)`` to
    ``(cos t y - sin t x, sin t y + cos t x)``: the counter-clockwise rotation (as displayed,
    row 0 on top) of ``skimage.transform.rotate``. A sample is NaN when a neighbour of
    non-zero weight is NaN or outside the input.
    """
    out = np.empty((out_ny, out_nx), dtype=np.float32)
    for r in range(out_ny):
        _warp_row(img, out[r], r, angle_deg, cy_in, cx_in, cy_out, cx_out, dy, dx)
    return out


@njit(cache=True, nogil=True)
def _corr_idx(cell, region, ridx, cidx):
    # Pearson correlation of cell with region[ridx][:, cidx] over jointly finite pixels;
    # an index of -1 (or outside the region) stands for a missing row/column.
    h, w = cell.shape
    nr, nc = region.shape
    n = 0
    sx = 0.0
    sy = 0.0
    for i in range(h):
        ri = ridx[i]
        if ri < 0 or ri >= nr:
            continue
        for j in range(w):
            cj = cidx[j]
            if cj < 0 or cj >= nc:
                continue
            x = cell[i, j]
            y = region[ri, cj]
            if math.isnan(x) or math.isnan(y):
                continue
            n += 1
            sx += x
            sy += y
    if n < 2:
        return np.nan
    mx = sx / n
    my = sy / n
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for i in range(h):
        ri = ridx[i]
        if ri < 0 or ri >= nr:
            continue
        for j in range(w):
            cj = cidx[j]
            if cj < 0 or cj >= nc:
                continue
            x = cell[i, j]
            y = region[ri, cj]
            if math.isnan(x) or math.isnan(y):
                continue
            sxx += (x - mx) * (x - mx)
            syy += (y - my) * (y - my)
            sxy += (x - mx) * (y - my)
    if sxx <= 0.0 or syy <= 0.0:
        return np.nan
    return sxy / math.sqrt(sxx * syy)


@njit(cache=True, nogil=True)
def index_corr(cells, regions, ridx, cidx):
    """Best Pearson correlation per cell over candidate index windows into its region.

    ``cells`` (n, h, w) and ``regions`` (n, H, W) are NaN-padded stacks; ``ridx`` (n, v, h)
    and ``cidx`` (n, v, w) give, for each of ``v`` variants, the region row/column matched
    to each cell row/column (-1 = missing). Returns (n,) the maximum over variants whose
    correlation is defined (NaN when none is): cmcR's ``calcRawCorr`` with ``which.max``.
    """
    n = cells.shape[0]
    nv = ridx.shape[1]
    out = np.empty(n, dtype=np.float64)
    for k in range(n):
        best = np.nan
        for v in range(nv):
            if ridx[k, v, 0] == -2:  # unused variant slot
                continue
            cc = _corr_idx(cells[k], regions[k], ridx[k, v], cidx[k, v])
            if not math.isnan(cc) and (math.isnan(best) or cc > best):
                best = cc
        out[k] = best
    return out


@njit(cache=True, nogil=True)
def cmcr_regions(rot, geom, max_missing, rbuf, rnan):
    """cmcR's target regions at one rotation: cut, NA-pad, drop, standardize.

    ``geom`` (k, 8) int64 rows ``(r0, r1, c0, c1, off_r, off_c, h, w)``: region rows
    ``r0..r1`` and columns ``c0..c1`` (inclusive) of ``rot`` placed at ``(off_r, off_c)`` in
    an ``h x w`` NA-padded region (``h <= 0``: no region). A region with a larger share of
    missing pixels than ``max_missing`` is dropped; the others are standardized over their
    finite pixels (mean, sd with n - 1; all NaN when sd is 0 or undefined) into
    ``rnan[i]`` (NaN-padded) and, NaN as 0, into ``rbuf[i, :h, :w]``. Returns a bool (k,)
    "used" mask.
    """
    k = geom.shape[0]
    used = np.zeros(k, dtype=np.bool_)
    for i in range(k):
        r0, r1, c0, c1, orr, occ, h, w = geom[i]
        if h <= 0:
            continue
        n = 0
        s = 0.0
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                v = rot[r, c]
                if not math.isnan(v):
                    n += 1
                    s += v
        if 1.0 - n / (h * w) > max_missing:
            continue
        used[i] = True
        rnan[i, :, :] = np.nan
        rbuf[i, :h, :w] = 0.0
        if n < 2:
            continue
        mu = s / n
        ss = 0.0
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                v = rot[r, c]
                if not math.isnan(v):
                    ss += (v - mu) * (v - mu)
        sd = math.sqrt(ss / (n - 1))
        if not sd > 0:
            continue
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                v = rot[r, c]
                if not math.isnan(v):
                    z = (v - mu) / sd
                    rnan[i, orr + r - r0, occ + c - c0] = z
                    rbuf[i, orr + r - r0, occ + c - c0] = z
    return used


@njit(cache=True, nogil=True)
def gathered_argmax(maps, ridx, cidx, nr, nc):
    """First maximum (row-major) of ``maps[k][ridx[k, :nr[k]]][:, cidx[k, :nc[k]]]``.

    ``maps`` (n, N, N); returns ``(q_row, q_col)`` int64 arrays (-1 when all entries are
    NaN): cmcR's ``which(resp == max(resp))[1, ]`` on the gathered CCF without copying it.
    """
    n = maps.shape[0]
    qr = np.full(n, -1, dtype=np.int64)
    qc = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        best = -np.inf
        for a in range(nr[k]):
            ra = ridx[k, a]
            for b in range(nc[k]):
                v = maps[k, ra, cidx[k, b]]
                if v > best:
                    best = v
                    qr[k] = a
                    qc[k] = b
    return qr, qc


@njit(cache=True, parallel=True)
def cell_search(cells, stack, r0, c0, margin, min_n):
    """Best masked-NCC offset of every cell in every image of a stack.

    ``cells`` (n, h, w); ``stack`` (T, H, W) the target warped into the reference frame
    and padded by ``margin`` on each side; cell ``k`` sits at ``(r0[k], c0[k])`` in the
    reference, so its region is ``stack[t, r0:r0 + h + 2 margin, c0:c0 + w + 2 margin]``.
    Returns ``dy, dx`` (offset minus ``margin``; first maximum in row-major order) and
    ``corr`` (NaN when no offset has ``min_n[k]`` jointly valid pixels), each (T, n).
    """
    n, h, w = cells.shape
    nt = stack.shape[0]
    side = 2 * margin + 1
    # the valid pixels of each cell, compacted once (row-major order kept)
    nv = np.zeros(n, dtype=np.int64)
    ii = np.empty((n, h * w), dtype=np.int64)
    jj = np.empty((n, h * w), dtype=np.int64)
    xv = np.empty((n, h * w), dtype=np.float64)
    for k in range(n):
        m = 0
        for i in range(h):
            for j in range(w):
                x = cells[k, i, j]
                if not math.isnan(x):
                    ii[k, m] = i
                    jj[k, m] = j
                    xv[k, m] = x
                    m += 1
        nv[k] = m
    dy = np.zeros((nt, n), dtype=np.int64)
    dx = np.zeros((nt, n), dtype=np.int64)
    corr = np.full((nt, n), np.nan, dtype=np.float64)
    for job in prange(nt * n):
        t = job // n
        k = job % n
        best = -np.inf
        by = 0
        bx = 0
        need = max(min_n[k], 2)
        if nv[k] < need:
            continue
        for oy in range(side):
            for ox in range(side):
                br = r0[k] + oy
                bc = c0[k] + ox
                cnt = 0
                sx = 0.0
                sy = 0.0
                sxx = 0.0
                syy = 0.0
                sxy = 0.0
                for v in range(nv[k]):
                    # float64 before squaring: a float32 product loses the variance of a
                    # window with a large mean and a small spread (one-pass cancellation)
                    y = np.float64(stack[t, br + ii[k, v], bc + jj[k, v]])
                    if math.isnan(y):
                        continue
                    x = np.float64(xv[k, v])
                    cnt += 1
                    sx += x
                    sy += y
                    sxx += x * x
                    syy += y * y
                    sxy += x * y
                if cnt < need:
                    continue
                vx = sxx - sx * sx / cnt
                vy = syy - sy * sy / cnt
                if vx <= 1e-12 * max(sxx, 1e-30) or vy <= 1e-12 * max(syy, 1e-30):
                    continue
                val = (sxy - sx * sy / cnt) / math.sqrt(vx * vy)
                if val > best:
                    best = val
                    by = oy
                    bx = ox
        if best > -np.inf:
            corr[t, k] = best
            dy[t, k] = by - margin
            dx[t, k] = bx - margin
    return dy, dx, corr


@njit(cache=True)
def _warp_row(img, out, r, angle_deg, cy_in, cx_in, cy_out, cx_out, dy, dx):
    ny, nx = img.shape
    out_nx = out.shape[0]
    rad = angle_deg * math.pi / 180.0
    ca = math.cos(rad)
    sa = math.sin(rad)
    qy = r - cy_out - dy
    for c in range(out_nx):
        qx = c - cx_out - dx
        ys = cy_in + ca * qy + sa * qx
        xs = cx_in - sa * qy + ca * qx
        y0 = int(math.floor(ys))  # noqa: RUF046
        x0 = int(math.floor(xs))  # noqa: RUF046
        fy = ys - y0
        fx = xs - x0
        if y0 < -1 or y0 >= ny or x0 < -1 or x0 >= nx:
            out[c] = np.nan
            continue
        acc = 0.0
        bad = False
        for j in range(2):
            wy = fy if j == 1 else 1.0 - fy
            if wy <= 1e-6:
                continue
            yy = y0 + j
            for i in range(2):
                wx = fx if i == 1 else 1.0 - fx
                if wx <= 1e-6:
                    continue
                xx = x0 + i
                if xx < 0 or xx >= nx or yy < 0 or yy >= ny:
                    bad = True
                else:
                    v = img[yy, xx]
                    if math.isnan(v):
                        bad = True
                    else:
                        acc += wx * wy * v
        out[c] = np.nan if bad else acc


@njit(cache=True)
def warp_stack(img, out_ny, out_nx, angles_deg, cy_in, cx_in, cy_out, cx_out, dy, dx):
    """:func:`warp_rigid` for several angles at once: (T, out_ny, out_nx) float32."""
    nt = angles_deg.shape[0]
    out = np.empty((nt, out_ny, out_nx), dtype=np.float32)
    for job in range(nt * out_ny):
        t = job // out_ny
        r = job % out_ny
        _warp_row(img, out[t, r], r, angles_deg[t], cy_in, cx_in, cy_out, cx_out, dy, dx)
    return out


@njit(cache=True)
def high_cmc_candidates(dx, dy, corr, present, t_xy, t_corr):
    """Per-rotation CMC candidates (Tong 2015 / cmcR ``decision_highCMC_cmcThetaDistrib``).

    Inputs are (n_theta, n_cells); ``present`` marks the cells compared at that rotation.
    For each rotation the consensus is the median dx and dy over the present cells; a cell
    is a candidate when it lies within ``t_xy`` of both and ``corr >= t_corr`` (NaN fails).
    """
    nt, nc = dx.shape
    cand = np.zeros((nt, nc), dtype=np.bool_)
    for t in range(nt):
        m = 0
        for c in range(nc):
            if present[t, c]:
                m += 1
        if m == 0:
            continue
        xs = np.empty(m)
        ys = np.empty(m)
        k = 0
        for c in range(nc):
            if present[t, c]:
                xs[k] = dx[t, c]
                ys[k] = dy[t, c]
                k += 1
        mx = np.median(xs)
        my = np.median(ys)
        for c in range(nc):
            if (
                present[t, c]
                and not math.isnan(corr[t, c])
                and corr[t, c] >= t_corr
                and abs(dx[t, c] - mx) <= t_xy
                and abs(dy[t, c] - my) <= t_xy
            ):
                cand[t, c] = True
    return cand


@njit(cache=True)
def original_cmc(dx, dy, theta, corr, present, t_xy, t_theta, t_corr):
    """Original CMC rule (Song 2013, as cmcR's ``decision_originalMethod_classifyCMCs``).

    Each cell keeps its rotation(s) of highest correlation; the consensus is the median dx,
    dy and theta over those kept rows; a kept row is congruent when within ``t_xy``,
    ``t_theta`` of it and ``corr >= t_corr``. Returns a bool (n_theta, n_cells) array.
    """
    nt, nc = dx.shape
    keep = np.zeros((nt, nc), dtype=np.bool_)
    nk = 0
    for c in range(nc):
        best = -np.inf
        for t in range(nt):
            if present[t, c] and not math.isnan(corr[t, c]) and corr[t, c] > best:
                best = corr[t, c]
        if best == -np.inf:
            continue
        for t in range(nt):
            if present[t, c] and corr[t, c] == best:
                keep[t, c] = True
                nk += 1
    out = np.zeros((nt, nc), dtype=np.bool_)
    if nk == 0:
        return out
    xs = np.empty(nk)
    ys = np.empty(nk)
    ts = np.empty(nk)
    k = 0
    for t in range(nt):
        for c in range(nc):
            if keep[t, c]:
                xs[k] = dx[t, c]
                ys[k] = dy[t, c]
                ts[k] = theta[t]
                k += 1
    mx = np.median(xs)
    my = np.median(ys)
    mt = np.median(ts)
    for t in range(nt):
        for c in range(nc):
            if (
                keep[t, c]
                and corr[t, c] >= t_corr
                and abs(dx[t, c] - mx) <= t_xy
                and abs(dy[t, c] - my) <= t_xy
                and abs(theta[t] - mt) <= t_theta
            ):
                out[t, c] = True
    return out
