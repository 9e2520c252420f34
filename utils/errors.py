class UserError(Exception):
    """A problem the user can fix (bad flag, missing data, wrong checkpoint...).

    The entry scripts print its message as one line on stderr and exit with status 2.
    """
