import sys

from cnnfit.cli import main

sys.exit(main())
