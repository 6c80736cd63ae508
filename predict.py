"""Entry point: see `python predict.py --help` (also installed as `minibert-predict`)."""
from minibert.cli import predict_main

raise SystemExit(predict_main())
