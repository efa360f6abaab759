"""The one exception scoreviz raises for bad input."""


class ScorevizError(ValueError):
    """Bad input to scoreviz: a damaged or foreign file, a wrong argument.

    The message always names the file or argument and what is wrong with it.
    """
