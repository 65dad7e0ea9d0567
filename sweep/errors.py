"""The one exception type for mistakes a user must fix: printed as one line each, no traceback."""


class UserError(Exception):
    """A problem with the user's input; ``str()`` is one line per problem, ready to print."""
