"""Correlation review in the browser: ``balllink serve``.

A local web application over one lead database: exhibits, each exhibit's candidates, the
pair view (both surfaces side by side and aligned, an overlay with an opacity slider, the
congruent cells outlined, the per-cell table, the pose and the handedness), leads with
their statuses and exports, series with a map and a timeline, the audit trail and the
database's health. Examiners confirm or reject leads there; every action goes through the
same `balllink.database.LeadDatabase` calls as the CLI and lands in the audit trail under
the signed-in user. Needs ``pip install 'balllink[serve]'``.
"""

from ._app import ReviewApp
from ._routes import create_app
from ._serve import serve

__all__ = ["ReviewApp", "create_app", "serve"]
