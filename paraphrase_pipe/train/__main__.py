"""`python -m paraphrase_pipe.train ARGS` is `paraphrase-pipe train ARGS`; torchrun launches it with `-m`."""
import sys

from paraphrase_pipe.console import app
from paraphrase_pipe.train import command  # noqa: F401 - registers `train` on the app

app(["train", *sys.argv[1:]], prog_name="paraphrase-pipe")
