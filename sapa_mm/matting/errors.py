"""The error a matting data set or transform raises for bad input files."""

__all__ = ['MattingInputError']


class MattingInputError(ValueError):
    """A problem with an input file (a missing file, sizes that disagree, a trimap with
    values other than 0 / 128 / 255, ...). The message names the file and the problem
    on one line; ``one_line`` tells the tools to print it as ``error: ...`` without a
    traceback, also when it comes back from a DataLoader worker."""

    one_line = True
