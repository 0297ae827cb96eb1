"""What a user sees of a node's problems: errors by their message, warnings on the node.

ComfyUI names an exception by its module path, and a custom node's modules are named after the
folder they live in (`/path/to/custom_nodes/<pack>.pbe_core.checkpoint.CheckpointError`); the
errors of this pack are ValueErrors with messages that name the input and the fix, so they reach
the user as plain ValueErrors. Warnings (a mask resized to the image) go to the console and to
the node, where web/paint_by_example.js draws them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings

WARNINGS_KEY = "pbe_warnings"  # the ui key web/paint_by_example.js reads


def plain_errors(execute):
    """Re-raise this pack's ValueError subclasses as ValueError, keeping the message."""

    @functools.wraps(execute)
    def wrapper(*args, **kwargs):
        try:
            return execute(*args, **kwargs)
        except ValueError as error:
            if type(error) is ValueError:
                raise
            raise ValueError(str(error)) from error

    return wrapper


@contextlib.contextmanager
def noted_warnings():
    """Collects the warnings raised inside; the list is filled when the block ends."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    for warning in caught:
        logging.warning("Paint by Example: %s", warning.message)
        notes.append(str(warning.message))


def with_warnings(ui: dict | None, notes: list[str]) -> dict | None:
    """The node's ui output with its warnings added (None when there is neither)."""
    if not notes:
        return ui
    return {**(ui or {}), WARNINGS_KEY: list(dict.fromkeys(notes))}
