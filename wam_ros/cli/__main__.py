"""``python -m wam_ros.cli``: the ``wam-ros`` command without its console script."""
import sys

from wam_ros.cli import main

sys.exit(main())
