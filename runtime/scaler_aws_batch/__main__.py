import sys

from scaler_aws_batch.cli import main

sys.exit(main())
