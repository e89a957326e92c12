"""Argument checks the upsampling modules share."""

__all__ = ['positive_ints']


def positive_ints(owner: str, **values) -> None:
    """Raise ``ValueError('<owner>: <name> must be a positive integer, got ...')`` for the
    first value that is not an ``int`` >= 1 (``True`` / ``False`` do not count as ints)."""
    for name, val in values.items():
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f'{owner}: {name} must be a positive integer, got {val!r}')
