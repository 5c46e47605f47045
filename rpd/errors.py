"""Errors a user can fix. The CLI prints their message on one line and exits with code 2.

This module imports nothing from rpd, so every layer (data included) may raise these.
"""


class RpdError(Exception):
    """Bad input or a missing prerequisite: the message names the file/option and the fix."""

    exit_code = 2


class InputError(RpdError):
    """A file, directory or option the user gave is wrong (missing, corrupt, mismatched)."""


class SetupError(RpdError):
    """The machine lacks something rpd needs (e.g. a Vulkan device for SAPIEN)."""
