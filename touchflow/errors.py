"""The root of every error a touchflow user can meet, with the exit code the command line gives it.

    TouchflowError            exit 1: what was wrong, where (file, row, field) and what to do
    ├── UsageError            exit 2: a command's arguments are wrong
    ├── ConfigError           exit 1: a setting or secret is missing or wrong
    ├── NotFound              exit 1: a customer, task, template or file the user named does not exist
    ├── InputError            exit 1: a file, spec, rule or template given by the user is wrong
    ├── RowsRejected          exit 3: an import kept some rows aside (the rest went in)
    ├── PolicyViolations      exit 4: the compliance report found contacts against the rules
    ├── TamperDetected        exit 5: the history no longer matches its seals
    └── RunStopped            exit 6: a run was stopped (a provider, the disk or a helper process failed)

Lower layers (``crm``, ``segments``, ``channels``, ``flows``, ``documents``) raise these or their own
subclasses; the command line prints the message and exits with the code, in one place. Like
``django.conf``, this module imports nothing from touchflow and may be imported from anywhere.
"""

from __future__ import annotations


class TouchflowError(Exception):
    """An error meant for the person running touchflow: the message says what, where and how to fix it."""

    exit_code = 1


class UsageError(TouchflowError):
    """A command's arguments are wrong."""

    exit_code = 2


class ConfigError(TouchflowError):
    """A setting or secret is missing or wrong."""


class NotFound(TouchflowError):
    """Something the user named does not exist."""


class InputError(TouchflowError, ValueError):
    """A file, spec, rule or template the user gave is wrong."""


class RowsRejected(TouchflowError):
    """Some rows of an import were rejected (and kept with their reasons)."""

    exit_code = 3


class PolicyViolations(TouchflowError):
    """The compliance report found contacts against the rules."""

    exit_code = 4


class TamperDetected(TouchflowError):
    """The history was changed after it was sealed."""

    exit_code = 5


class RunStopped(TouchflowError):
    """A run could not go on (a helper process died, the disk is full, a provider is down)."""

    exit_code = 6
