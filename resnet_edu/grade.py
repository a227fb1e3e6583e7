"""``python -m resnet_edu.grade SUBMISSIONS_DIR --out scores.csv``: see :mod:`resnet_edu.grading`."""

from .grading.core import *  # noqa: F401,F403
from .grading.core import (  # noqa: F401 - used by the tests and older scripts
    _CHECK_RE,
    _GRADER_RE,
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_TIMEOUT,
    STARTUP_TIMEOUT,
    _exercise_tests,
    available_exercises,
    default_masters_dir,
    detect_exercise,
    main,
)

if __name__ == "__main__":
    raise SystemExit(main())
