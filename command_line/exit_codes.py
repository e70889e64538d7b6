"""The CLI's exit codes, by the request's status once a command is done."""

EXIT_CODES = {"COMPLETED": 0, "COMPLETED_WITH_ERRORS": 2, "FAILED": 3, "CANCELLED": 1}
FINAL_STATUSES = set(EXIT_CODES)
EXIT_ERROR = 1
# sysexits' EX_USAGE: argparse's own 2 is COMPLETED_WITH_ERRORS here.
EXIT_USAGE = 64
EXIT_INTERRUPTED = 130
