"""``python -m scoreviz.trainer`` and ``torchrun --nproc_per_node N -m scoreviz.trainer``."""

import argparse
import sys

from scoreviz.errors import ScorevizError
from scoreviz.trainer.train import add_arguments, main

if __name__ == "__main__":
    parser = add_arguments(argparse.ArgumentParser(prog="scoreviz.trainer", description="Train MoCo(+FT) and record its scores."))
    try:
        main(parser.parse_args())
    except ScorevizError as e:
        sys.exit(f"error: {e}")
