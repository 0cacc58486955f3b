"""``python -m tokengrpc``: the same as the ``tokengrpc`` command."""

import sys

from tokengrpc.cli import main

sys.exit(main())
