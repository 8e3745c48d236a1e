"""argparse types shared by pybpf's command lines: bounded counts and durations, NAME=VALUE.

A bad value becomes argparse's usage error (exit status 2) with a message saying what is
expected, instead of a traceback.
"""

import argparse
import math

U32_MAX = 0xFFFFFFFF
MAX_SECONDS = 30 * 86400  # a longer interval is a typo, and would overflow select()


def bounded_int(text, low, high):
    """A whole number in ``low..high``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between {low} and {high}")
    return value


def positive_int(text):
    """A whole number from 1 to 2**32-1 (what the kernel's u32 counts hold)."""
    return bounded_int(text, 1, U32_MAX)


def positive_seconds(text):
    """A finite number of seconds greater than zero, at most 30 days."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds")
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be more than 0 and at most {MAX_SECONDS} seconds (30 days)")
    return value


def name_value(text):
    """``NAME=VALUE`` as the pair ``(NAME, VALUE)``: NAME not empty, VALUE any text."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.strip(), value
