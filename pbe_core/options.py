"""The edit's parameters, checked in one place before anything is loaded or computed.

`EditOptions(...).validate()` raises `OptionError` (a ValueError) whose message starts with the
parameter's name as the Python API spells it (`context`, `batch_size`); `OptionError.option`
holds that name so that a front end can name its own control instead (the CLI says `--context`,
`--batch-size`). The pipeline calls the same validation, so the API and the hosts get it too.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

SAMPLERS = ("plms", "ddim", "euler", "euler_a", "dpmpp_2m")
SAMPLERS_WITH_ETA = ("ddim",)
REGIONS = ("auto", "full")
EXEMPLAR_MODES = ("squash", "crop", "pad")
COMPAT = ("diffusers",)
MAX_STEPS = 999  # the +1 timestep offset of the 1000-step schedule leaves 999 usable steps
MIN_RESOLUTION = 64  # 8 latent pixels: below that the UNet's three downsamplings have nothing left
MAX_SEED = 2**64 - 1  # what torch.Generator.manual_seed takes (and ComfyUI's seed widget)


class OptionError(ValueError):
    """A parameter the edit cannot run with; `option` is its API name."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option = option
        self.problem = problem


def _integer(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integral and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        integral = True  # 50.0 is 50; 1.5 is refused below rather than truncated to 1
    if not integral:
        raise OptionError(name, f"must be a whole number; got {value!r}")
    value = int(value)
    if low is not None and value < low or high is not None and value > high:
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise OptionError(name, f"must be {bounds}; got {value}")
    return value


def _real(name: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(name, f"must be a number; got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise OptionError(name, f"must be a finite number; got {value}")
    if low is not None and value < low:
        raise OptionError(name, f"must be at least {low:g}; got {value:g}")
    return value


def _choice(name: str, value: Any, choices: tuple, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if value not in choices:
        valid = ", ".join(map(str, choices)) + (" (or None)" if allow_none else "")
        raise OptionError(name, f"must be one of {valid}; got {value!r}")
    return value


@dataclass
class EditOptions:
    """Every number and choice of an edit, with the defaults of the API and the CLI."""

    steps: int = 50
    guidance: float = 5.0
    sampler: str = "plms"
    seed: int = 0
    eta: float = 0.0
    batch_size: int = 1
    candidates: int = 1
    region: str = "auto"
    context: float = 1.5
    resolution: int = 512
    grow: int = 0
    feather: int = 8
    fill_holes: bool = False
    mask_hipass: float = 0.0
    multiple: int = 8
    min_size: int = 128
    max_aspect: float = 2.0
    colour_match: float = 0.0
    exemplar_mode: str | None = None
    negative_weight: float = 1.0
    compat: str | None = None

    def validate(self) -> EditOptions:
        """Check and normalise every field (50.0 -> 50); raise OptionError for the first bad one."""
        self.steps = _integer("steps", self.steps, 1, MAX_STEPS)
        self.guidance = _real("guidance", self.guidance, 0)
        self.sampler = _choice("sampler", self.sampler, SAMPLERS)
        self.batch_size = _integer("batch_size", self.batch_size, 1)
        self.candidates = _integer("candidates", self.candidates, 1)
        if self.batch_size > 1 and self.candidates > 1:
            raise OptionError("candidates", "ranks the seeds of one input: give batch_size or candidates, not both")
        # image i of a batch uses seed + i: the last one must still be a valid seed
        self.seed = _integer("seed", self.seed, 0, MAX_SEED - (max(self.batch_size, self.candidates) - 1))
        self.eta = _real("eta", self.eta, 0)
        if self.eta != 0 and self.sampler not in SAMPLERS_WITH_ETA:
            raise OptionError(
                "eta", f"applies to the {', '.join(SAMPLERS_WITH_ETA)} sampler only; the "
                f"{self.sampler} sampler has none (leave eta at 0 or pick sampler ddim)"
            )
        self.region = _choice("region", self.region, REGIONS)
        self.context = _real("context", self.context, 1)
        self.resolution = _integer("resolution", self.resolution, MIN_RESOLUTION)
        self.grow = _integer("grow", self.grow)
        self.feather = _integer("feather", self.feather, 0)
        if not isinstance(self.fill_holes, bool):
            raise OptionError("fill_holes", f"must be True or False; got {self.fill_holes!r}")
        self.mask_hipass = _real("mask_hipass", self.mask_hipass, 0)
        if self.mask_hipass > 1:
            raise OptionError("mask_hipass", f"is a mask value within 0..1; got {self.mask_hipass:g}")
        self.multiple = _integer("multiple", self.multiple, 1, self.resolution)
        self.min_size = _integer("min_size", self.min_size, 1)
        self.max_aspect = _real("max_aspect", self.max_aspect, 1)
        self.colour_match = _real("colour_match", self.colour_match, 0)
        if self.colour_match > 1:
            raise OptionError("colour_match", f"is a strength within 0..1; got {self.colour_match:g}")
        self.exemplar_mode = _choice("exemplar_mode", self.exemplar_mode, EXEMPLAR_MODES, True)
        self.negative_weight = _real("negative_weight", self.negative_weight)
        self.compat = _choice("compat", self.compat, COMPAT, True)
        return self

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: there bf16 matmuls run several times faster than fp32 ones; on other
    CPUs bf16 is emulated and several times slower than fp32 (a toy VAE training step on an
    AVX2 CPU: 4.4 s in bf16, 0.4 s in fp32)."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch >= 2.3, x86 only
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_device(name: str | None):
    """A device name -> torch.device that this torch can use; None picks cuda > mps > cpu.

    Raises OptionError("device", ...) naming what is missing and the way out.
    """
    import torch

    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError("device", f"{name!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise OptionError(
                "device", f"{name!r}: no CUDA GPU is usable (this torch {torch.__version__} is "
                f"{build}); use device cpu, or install torch's CUDA build (see the README)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(
                "device", f"{name!r}: there are only {torch.cuda.device_count()} CUDA devices "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise OptionError("device", f"{name!r}: Apple's MPS is not available here; use device cpu")
    elif device.type != "cpu":
        raise OptionError("device", f"{name!r}: this pack runs on cpu, cuda or mps")
    return device
