"""``python -m mirage_gym``: the ``mirage-gym`` command."""

import sys

from mirage_gym.cli import main

sys.exit(main())
