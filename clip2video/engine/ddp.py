"""Alias of :mod:`clip2video.engine.distributed`, the one home of the distributed helpers.

Kept so that ``from clip2video.engine import ddp`` keeps working; new code imports
``clip2video.engine.distributed``.
"""

from clip2video.engine.distributed import *  # noqa: F403
from clip2video.engine.distributed import __all__  # noqa: F401
