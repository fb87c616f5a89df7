"""`python -m paraphrase_pipe.train ARGS` is `paraphrase-pipe train ARGS`; torchrun launches it with `-m`."""
import sys

from paraphrase_pipe.cli import app

app(["train", *sys.argv[1:]], prog_name="paraphrase-pipe train")
