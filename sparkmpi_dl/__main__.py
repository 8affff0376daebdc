import sys

from sparkmpi_dl.cli import main

sys.exit(main())
