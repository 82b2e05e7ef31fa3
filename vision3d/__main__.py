import sys

from vision3d.cli import main

sys.exit(main())
