"""Errors that dualex raises for problems a user can fix.

Every error here carries a plain-language message that names the bad input and, where possible,
what to do about it. They derive from the built-in exception a caller would expect (``ValueError``
for bad values, ``FileNotFoundError`` for missing files) so generic handlers keep working.
"""

from __future__ import annotations


class DualexError(Exception):
    """Base class of all errors raised by dualex on purpose."""


class InputError(DualexError, ValueError):
    """An input (image, caption, span, box, layer, option) is not usable as given."""


class ModelNotAvailableError(DualexError, OSError):
    """A model name cannot be resolved to weights on this machine (e.g. offline, no local copy)."""


class UnsupportedModelError(DualexError, TypeError):
    """A model object or family is not supported by any adapter, or not by the requested method."""
