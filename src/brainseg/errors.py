"""Errors caused by input or settings a user can fix; stages print them without a traceback."""


class BrainsegError(Exception):
    """Base of every error whose message names the file or key at fault and the fix."""
