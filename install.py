"""Install hook: installs what requirements.txt lists and the Python environment lacks.

AUTOMATIC1111's webui and Forge run this file at start-up with their `launch` module importable
(`launch.is_installed`, `launch.run_pip`); ComfyUI-Manager runs it with plain Python, where pip
is called directly. torch is never installed: the host owns it.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
NEVER_INSTALL = {"torch", "torchvision", "torchaudio"}  # the host's own build must stay


def requirement_lines(path: Path = REQUIREMENTS) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def distribution_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def is_satisfied(requirement: str) -> bool:
    """Installed, and at a version the requirement accepts (when `packaging` can tell)."""
    try:
        installed = importlib.metadata.version(distribution_name(requirement))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no way to compare versions: presence has to do
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


def pip_install(requirement: str) -> None:
    try:
        import launch  # the webui's start-up module (A1111, Forge)
    except ImportError:
        launch = None
    if launch is not None and hasattr(launch, "run_pip"):
        launch.run_pip(f'install "{requirement}"', f"Paint by Example requirement: {requirement}")
    else:
        subprocess.check_call([sys.executable, "-m", "pip", "install", requirement])


def main() -> None:
    for requirement in requirement_lines():
        if distribution_name(requirement).lower() in NEVER_INSTALL:
            continue
        if not is_satisfied(requirement):
            pip_install(requirement)


if __name__ == "__main__":
    main()
