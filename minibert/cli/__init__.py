"""Command lines of train.py / minibert-train and predict.py / minibert-predict, a module per command.

Both are thin layers over the library: parse flags, build the pieces, print what happens. Flags are
made from dataclass fields (flags.py): TrainConfig's and each task's options for train.py, each task's
PredictOptions for predict.py, so a setting is declared once, with its help text; the task object
then reads the data, builds the batches, and shows, writes and evaluates predictions. Nothing here
branches on a task's name. Every expected failure (bad file, bad folder, bad flag) is one line on
stderr and exit status 2 (errors.py). The default jobs use the repository's models/, vocab/ and
examples/, which a `pip install .` lacks: then the error names the flags to pass instead.

    train.py     the train parser and command: job defaults, the model to start from, the summary
    predict.py   the predict parser and command: inputs, the task's Predictor, --eval
    writers.py   predictions printed, or written to --output through a temporary file
    card.py      the model card and train_args.json
    flags.py     flags from dataclass fields
    errors.py    errors to exit statuses, warnings as one line
    shipped.py   the repository files the default jobs use
"""

from .predict import predict_command, predict_main, predict_parser
from .train import train_command, train_main, train_parser

__all__ = ["predict_command", "predict_main", "predict_parser", "train_command", "train_main", "train_parser"]
