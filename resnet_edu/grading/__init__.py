"""Grading student notebooks: sandbox (:mod:`.sandbox`), protocol and verdicts (:mod:`.wire`,
:mod:`.remote`, :mod:`.worker`), gradebook (:mod:`.gradebook`) and the command (:mod:`.core`)."""

from .core import *  # noqa: F401,F403
from .core import __all__  # noqa: F401
