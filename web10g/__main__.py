import sys

from web10g.cli import main

sys.exit(main())
