"""`python -m batch_emulator`: see `batch_emulator.standalone`."""

import sys

from batch_emulator.standalone import main

sys.exit(main())
