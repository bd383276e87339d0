import sys

from lesionlib.cli import main

sys.exit(main())
