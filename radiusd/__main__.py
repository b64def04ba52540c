import sys

from radiusd.cli import main

sys.exit(main())
