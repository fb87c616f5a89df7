"""paraphrase-pipe."""
__version__ = "0.1.0"
