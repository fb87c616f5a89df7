"""The one exception the evaluation raises for bad input; the CLI prints its message, never a traceback."""


class EvalError(ValueError):
    """A user-facing problem: a path, dataset, column, model or option that cannot be used as given."""
