import sys

from tokengrpc.cli import main

sys.exit(main())
