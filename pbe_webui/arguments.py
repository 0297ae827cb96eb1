"""The script's arguments: their order (the UI's components and the API's `script_args`), their
defaults, and what they may be.

The webui's API puts the request's `script_args` in place of the script's own slice of the job's
arguments, so a shorter or longer list moves every argument after it; the length of the whole
list tells how many the caller sent. Missing trailing arguments take their defaults (old API
calls keep working as arguments are added at the end); extra ones are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import inputs
from .errors import PaintByExampleError
from .models import NO_LORA, default_model


@dataclass(frozen=True)
class Argument:
    name: str  # as messages and the README's A1111 section say it
    default: Callable[[], object]
    check: Callable[[object, str], object]  # (value, name) -> the value to use


def keep(value, _name):
    return value


def whole_number(low: int, high: int) -> Callable[[object, str], int]:
    def check(value, name) -> int:
        result = inputs.number(value, name, low, high)
        if result != int(result):
            raise PaintByExampleError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
        return int(result)

    return check


def number_in(low: float, high: float) -> Callable[[object, str], float]:
    return lambda value, name: inputs.number(value, name, low, high)


def one_of(options) -> Callable[[object, str], str]:
    return lambda value, name: inputs.choice(value, name, options)


ARGUMENTS = (
    Argument("exemplar", lambda: None, keep),
    Argument("model", default_model, keep),
    Argument("sampler", lambda: "PLMS", one_of(inputs.SAMPLERS)),
    Argument("crop context", lambda: 1.5, number_in(*inputs.CROP_CONTEXT_RANGE)),
    Argument("exemplar mode", lambda: "squash", one_of(inputs.EXEMPLAR_MODES)),
    Argument("negative exemplar", lambda: None, keep),
    Argument("negative exemplar weight", lambda: 1.0, number_in(0.0, 1.0)),
    Argument("colour match", lambda: 0.0, number_in(0.0, 1.0)),
    Argument("best of", lambda: 1, whole_number(1, inputs.MAX_CANDIDATES)),
    Argument("LoRA", lambda: NO_LORA, keep),
    Argument("LoRA strength", lambda: 1.0, number_in(*inputs.LORA_STRENGTH_RANGE)),
)
NAMES = tuple(argument.name for argument in ARGUMENTS)


def sent_values(script, p, args: tuple) -> tuple:
    """The values the caller sent for this script (see the module docstring)."""
    runner = getattr(p, "scripts", None)
    whole = getattr(p, "script_args", None)
    if runner is None or whole is None or script.args_from is None:
        return args
    expected = max(other.args_to or 0 for other in runner.scripts)
    sent = len(whole) - (expected - len(ARGUMENTS))
    return tuple(whole[script.args_from : script.args_from + max(sent, 0)])


def parse(values: tuple) -> dict:
    """{name: checked value}, defaults for the missing trailing ones."""
    if len(values) > len(ARGUMENTS):
        raise PaintByExampleError(
            f"script_args has {len(values)} values; Paint by Example takes at most "
            f"{len(ARGUMENTS)}, in this order: {', '.join(NAMES)}."
        )
    parsed = {}
    for index, argument in enumerate(ARGUMENTS):
        value = values[index] if index < len(values) else argument.default()
        parsed[argument.name] = argument.check(value, argument.name)
    return parsed
