import sys

from mlaflow.cli import main

sys.exit(main())
