"""One worker process of a multi-process run started by distributed.launch_workers
(`python -m scaling.train.worker`, the run's config as JSON on stdin): it trains its rank of
the run and exits 130 when interrupted, 2 on a user error.
"""

from __future__ import annotations

import json
import sys

from scaling.base.config import TrainConfig
from scaling.base.errors import UserError
from scaling.base.signals import checkpoint_signal_held
from scaling.train.run import TrainingRun


def main() -> None:
    with checkpoint_signal_held():
        try:
            TrainingRun(TrainConfig.from_dict(json.loads(sys.stdin.read()))).fit()
        except KeyboardInterrupt:
            sys.exit(130)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
