import sys

from xp2p.cli import main

sys.exit(main())
