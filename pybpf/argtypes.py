"""argparse types shared by pybpf's command lines: positive counts and durations.

A bad value becomes argparse's usage error (exit status 2) with a message saying what is
expected, instead of a traceback.
"""

import argparse


def positive_int(text):
    """A whole number greater than zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be greater than 0")
    return value


def positive_seconds(text):
    """A number of seconds greater than zero (and finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value
