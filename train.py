"""Entry point: see `python train.py --help` (also installed as `minibert-train`)."""
from minibert.cli import train_main

raise SystemExit(train_main())
