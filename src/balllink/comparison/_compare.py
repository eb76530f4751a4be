"""`compare` and `compare_many`: the inputs checked and prepared, the handedness plan (b as
it is, its mirror image, or both), the method run (`._cmcr` or `._cells`), the minimum
evidence applied, and the pose expressed between the scans the caller gave."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .._scan import HANDEDNESS, Scan
from .._threads import map_threads
from ..align import Pose, pose_transform
from ..errors import PreprocessError
from ..preprocessing import prepare_if_needed, resample
from ._cells import compare_default
from ._cmcr import compare_cmcr
from ._config import CMCConfig
from ._prepare import Prepared, mirror_scan, prepared
from ._result import Comparison

__all__ = ["compare", "compare_many"]

log = logging.getLogger(__name__)


def _resolve_config(method, config) -> CMCConfig:
    if config is not None and not isinstance(config, CMCConfig):
        raise TypeError(f"config must be a CMCConfig, got {type(config).__name__}")
    if method is None:
        return config if config is not None else CMCConfig()
    if method == "cmcr":
        return CMCConfig.cmcr() if config is None else config
    if method == "default":
        return CMCConfig() if config is None else config
    if method in ("high", "original"):
        base = config if config is not None else CMCConfig()
        if method == "original" and base.combine == "cmcr":
            return replace(base, method="original", combine="min")
        return replace(base, method=method)
    raise ValueError(
        f"method must be None, 'default', 'cmcr', 'high' or 'original', got {method!r}"
    )


def _check_pair(a, b) -> tuple[Scan, Scan]:
    """Validate a pair; scans of different spacing are resampled to the coarser one."""
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, Scan):
            raise TypeError(f"compare: {name} must be a balllink.Scan, got {type(s).__name__}")
    if not np.allclose(a.spacing_um, b.spacing_um, rtol=1e-6):
        target = max(max(a.spacing_um), max(b.spacing_um))
        log.info(
            "compare: %s (%s µm) and %s (%s µm) differ in spacing; resampling to %g µm",
            a.name, a.spacing_um, b.name, b.spacing_um, target,
        )  # fmt: skip
        try:
            a, b = (resample(s, spacing_um=target) for s in (a, b))
        except Exception as exc:
            raise PreprocessError(
                f"compare: scans {a.name} (spacing {a.spacing_um} µm) and {b.name} (spacing "
                f"{b.spacing_um} µm) differ in lateral spacing and could not be resampled to "
                f"{target:g} µm ({exc}); resample both first, e.g. bl.resample(scan, "
                "spacing_um=6.25)"
            ) from exc
    for s in (a, b):
        if abs(s.spacing_um[0] - s.spacing_um[1]) > 1e-6 * s.spacing_um[0]:
            raise PreprocessError(
                f"compare: scan {s.name} has non-square pixels {s.spacing_um} µm; resample "
                "it to square pixels first (bl.resample)"
            )
    return a, b


def _mirror_plan(a: Scan, b: Scan, cfg: CMCConfig) -> str:
    """ "same" (compare b as it is), "mirror" (its mirror image) or "search" (both)."""
    if cfg.handedness == "same":
        return "same"
    if cfg.handedness == "both":
        return "search"
    ha, hb = a.meta.get("handedness"), b.meta.get("handedness")
    if ha in HANDEDNESS and hb in HANDEDNESS:
        return "same" if ha == hb else "mirror"
    return "search"


def _with_evidence(res: Comparison, a: Scan, b: Scan, cfg: CMCConfig, auto) -> Comparison:
    """Minimum evidence: too small a surface or too few cells cannot make a lead."""
    short = []
    for s in (a, b) if a is not b else (a,):
        area = s.area_mm2
        if area < cfg.min_area_mm2:
            short.append(
                f"scan {s.name} has {area:.2f} mm² of valid surface (< {cfg.min_area_mm2:g})"
            )
    cells = [d.n_cells for d in res.directions]
    if res.directions and min(cells) < cfg.min_cells and not res.reason.startswith("too few"):
        short.append(f"{min(cells)} cells compared in one direction (< {cfg.min_cells})")
    if not short:
        return replace(res, auto_prepared=auto)
    reason = "too little evidence for a lead: " + "; ".join(short)
    if res.reason:
        reason += f" ({res.reason})"
    return replace(res, score=0.0, lead=False, reason=reason, auto_prepared=auto)


def _model(model):
    """The LR model a comparison uses: the shipped one by default, none with False."""
    if model is None:
        from ..evidence import default_model

        return default_model()
    return model or None


def _with_lr(res: Comparison, model, a: Scan, b: Scan) -> Comparison:
    """Attach the likelihood ratio and decide the lead from it (the legacy score threshold
    when the model does not apply to this configuration)."""
    if model is None:
        return res
    from ..evidence import ModelMismatchError, source_spacing_um

    try:
        ev = model.evidence(res, max(source_spacing_um(a), source_spacing_um(b)))
    except ModelMismatchError as exc:
        log.debug("compare: no LR: %s", exc)
        return res
    short = res.reason.startswith("too little evidence")
    return replace(res, evidence=ev, lead=bool(model.is_lead(ev.log10_lr)) and not short)


def _ready(scan: Scan, prepare: bool) -> Scan:
    return prepare_if_needed(scan) if prepare else scan


def _centre_offset(given: Scan, used: Scan) -> np.ndarray:
    """Where the array centre of ``used`` (``given`` prepared and cropped) lies relative to
    the array centre of ``given``, in µm."""
    if used is given:
        return np.zeros(2)
    origin = np.asarray(used.meta.get("prepared", {}).get("origin_um", (0.0, 0.0)), float)
    c_used = origin + (np.asarray(used.shape) - 1) / 2 * np.asarray(used.spacing_um)
    return c_used - (np.asarray(given.shape) - 1) / 2 * np.asarray(given.spacing_um)


def _in_given_frames(res: Comparison, a, a_used, b, b_used) -> Comparison:
    """Express the pose between the scans the caller gave, not their prepared crops:
    q_a = R q_b + d in prepared frames becomes q_a' = R q_b' + (d + off_a - R off_b)."""
    if (a_used is a and b_used is b) or math.isnan(res.rotation_deg):
        return res
    off_a, off_b = _centre_offset(a, a_used), _centre_offset(b, b_used)
    if res.mirrored:  # the mirror image of b flips rows about its own centre
        off_b = off_b * np.array([-1.0, 1.0])
    turned = pose_transform(Pose(res.rotation_deg, 0.0, 0.0, math.nan), off_b)
    d = np.asarray(res.translation_um, float) + off_a - turned
    return replace(res, translation_um=(float(d[0]), float(d[1])))


def _compare_ready(a: Scan, b: Scan, cfg: CMCConfig, pa: Prepared | None = None) -> Comparison:
    """Compare two checked, prepared scans of one spacing (handedness handled here)."""
    plan = _mirror_plan(a, b, cfg)
    if cfg.ccf == "cmcr":
        return compare_cmcr(a, mirror_scan(b) if plan == "mirror" else b, cfg, plan == "mirror")
    pa = pa if pa is not None else prepared(a, cfg)
    pb = prepared(b, cfg)
    # the window search (a fixed rotation range) looks at b as it is unless told otherwise
    search = plan == "search" and cfg.search == "global"
    pbm = prepared(mirror_scan(b), cfg) if search or plan == "mirror" else None
    return compare_default(pa, pb, cfg, pbm, force_mirror=plan == "mirror")


def compare(
    a: Scan,
    b: Scan,
    *,
    method: str | None = None,
    config: CMCConfig | None = None,
    prepare: bool | None = None,
    model=None,
) -> Comparison:
    """Compare two scans with congruent matching cells, in both directions.

    Parameters
    ----------
    a, b : Scan
        Scans of one casing each. Scans that are not prepared (leveled, band-passed, NaN
        outside the breech face) are prepared first with the default chain
        (`balllink.preprocess.prepare_if_needed`: a claim to be prepared is checked against
        the data), logged and recorded in ``Comparison.auto_prepared``.
    method : {None, "default", "cmcr", "high", "original"}, optional
        Shortcut for a configuration: ``"cmcr"`` is ``CMCConfig.cmcr()``; ``"high"`` /
        ``"original"`` switch the decision rule of ``config``.
    config : CMCConfig, optional
        Every parameter; ``CMCConfig()`` (full 360 degrees, both handedness when unknown)
        by default.
    prepare : bool, optional
        False compares the scans exactly as given (for experts who prepared them their
        own way). Default: True, except in the cmcR mode (``ccf="cmcr"``), which
        reproduces cmcR on scans processed as cmcR does.
    model : balllink.evidence.LRModel or False, optional
        The likelihood-ratio model of ``Comparison.evidence`` and of the lead decision:
        the shipped `balllink.evidence.default_model` by default; False for none (the lead
        is then ``score >= config.lead_threshold``).

    Returns
    -------
    Comparison
        ``cmc_count``, ``score``, ``rotation_deg`` / ``translation_um`` (pose of ``b``, or
        of its mirror image when ``mirrored``, relative to ``a``, between the array
        centres of the scans as given, see `balllink.comparison`; the ``cells`` table is in
        the frames of the prepared scans), ``lead``, ``directions``, ``cells``, ``reason``, ``mirrored``,
        ``auto_prepared``. Too little evidence (`CMCConfig.min_area_mm2`,
        `CMCConfig.min_cells`) gives ``score`` 0 and no lead, with the reason.

    Raises
    ------
    balllink.PreprocessError
        When the scans differ in spacing and cannot be resampled to the coarser one, or have
        non-square pixels, or hold nothing usable (the message names the scans).

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> from scipy import ndimage as ndi
    >>> rng = np.random.default_rng(0)
    >>> z = ndi.gaussian_filter(rng.standard_normal((300, 300)), 2).astype("float32")
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> cmp = bl.compare(a, a)
    >>> cmp.lead, cmp.cmc_count > 60, round(cmp.rotation_deg) % 360, cmp.mirrored
    (True, True, 0, False)
    >>> bl.compare(a, bl.Scan(np.flipud(z), spacing_um=6.25)).mirrored
    True
    """
    cfg = _resolve_config(method, config)
    for name, s in (("a", a), ("b", b)):
        if not isinstance(s, Scan):
            raise TypeError(f"compare: {name} must be a balllink.Scan, got {type(s).__name__}")
    prepare = cfg.ccf != "cmcr" if prepare is None else bool(prepare)
    a1, b1 = _ready(a, prepare), _ready(b, prepare)
    auto = (a1 is not a, b1 is not b)
    a2, b2 = _check_pair(a1, b1)
    res = _with_evidence(_compare_ready(a2, b2, cfg), a2, b2, cfg, auto)
    res = _with_lr(res, _model(model), a, b)
    return _in_given_frames(res, a, a1, b, b1)


def compare_many(
    query: Scan,
    candidates: Sequence[Scan],
    *,
    config: CMCConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    prepare: bool | None = None,
    model=None,
) -> list[Comparison]:
    """Compare one query with many candidates, reusing the per-scan work.

    The query's cells, pyramids and alignment template (with its rotated stack) are
    computed once, and each candidate's once (its mirror image's too, when handedness is
    searched); both are cached per ``Scan`` object (weakly: dropped with the scan), so a
    database comparing one candidate with many queries prepares it once. The candidates
    are compared side by side, one per core (`balllink._threads.map_threads`; one at a
    time inside ``thread_limit(1)``, as in a Dask task); the results keep their order.
    Scans that are not prepared are prepared first, as in `compare`; ``model`` is
    `compare`'s.

    Examples
    --------
    >>> import numpy as np, balllink as bl
    >>> z = np.random.default_rng(1).standard_normal((96, 96)).astype("float32")
    >>> a = bl.Scan(z, spacing_um=6.25)
    >>> cfg = bl.CMCConfig(downsample=1, search="window")
    >>> [(c.cmc_count > 100, c.lead) for c in bl.compare_many(a, [a, a], config=cfg)]
    [(True, False), (True, False)]
    >>> bl.compare_many(a, [a], config=cfg)[0].reason.startswith("too little evidence")
    True
    """
    cfg = config if config is not None else CMCConfig()
    prepare = cfg.ccf != "cmcr" if prepare is None else bool(prepare)
    if not isinstance(query, Scan):
        raise TypeError(f"compare_many: query must be a balllink.Scan, got {type(query).__name__}")
    q = _ready(query, prepare)
    cands = []
    for c in candidates:
        if not isinstance(c, Scan):
            raise TypeError(
                f"compare_many: candidates must be balllink.Scan, got {type(c).__name__}"
            )
        c2 = _ready(c, prepare)
        q2, c3 = _check_pair(q, c2)
        if q2 is not q:  # candidates of another spacing are resampled to the query's
            raise PreprocessError(
                f"compare_many: candidate {c.name} has spacing {c.spacing_um} µm, finer than "
                f"the query {query.name} ({query.spacing_um} µm); resample it first"
            )
        cands.append((c, c2, c3))
    lr_model = _model(model)
    pq = prepared(q, cfg) if cfg.ccf != "cmcr" else None

    def one(item) -> Comparison:
        given, used, c = item
        res = _compare_ready(q, c, cfg, pq)
        res = _with_evidence(res, q, c, cfg, (q is not query, used is not given))
        res = _with_lr(res, lr_model, query, given)
        return _in_given_frames(res, query, q, given, used)

    done = None if progress is None else (lambda i: progress(i, len(cands)))
    return map_threads(one, cands, on_done=done)
