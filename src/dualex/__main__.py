"""``python -m dualex`` = the ``dualex`` command."""

import sys

from dualex.cli import main

sys.exit(main())
