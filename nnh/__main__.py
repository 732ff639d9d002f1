"""Entry point of `python -m nnh`."""

import sys

from nnh._demo import main

if __name__ == "__main__":
    sys.exit(main())
