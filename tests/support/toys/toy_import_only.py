"""A user module for ``--import tests.support.toys.toy_import_only``: it registers a model when imported.

It reaches its sibling by a relative import, so the ``toys`` package works under any name
(``tests.support.toys`` here; ``toys`` with ``tests/support`` on ``PYTHONPATH``).
"""

from __future__ import annotations

from clip2video.models import list_models, register_model

from .toy_model import MeanColourModel


@register_model
def toy_import_only(dim: int = 8) -> MeanColourModel:
    return MeanColourModel(dim=dim)


assert "toy_import_only" in list_models(), "importing this module must register its model"
