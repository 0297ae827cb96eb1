"""AUTOMATIC1111 webui / Forge: "Paint by Example" in the img2img tab's Scripts list.

The webui loads every .py in scripts/ as a script module, so this file stays thin: its parts
live in the `pbe_webui` package beside it in the extension root (see pbe_webui/__init__.py).
`run()` performs the whole edit with pbe_core's pipeline and returns its own `Processed`; the
tab's prompts, denoising strength, masked content and sampling method are not used.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modules import scripts

EXTENSION_ROOT = Path(__file__).resolve().parents[1]
if str(EXTENSION_ROOT) not in sys.path:
    sys.path.append(str(EXTENSION_ROOT))  # appended, so the folder's other names shadow nothing

from pbe_webui import arguments, job, ui  # noqa: E402
from pbe_webui.errors import PaintByExampleError  # noqa: E402
from pbe_webui.infotext import TITLE  # noqa: E402


class Script(scripts.Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        return ui.build(self)

    def run(self, p, *args):
        try:
            values = arguments.parse(arguments.sent_values(self, p, args))
        except PaintByExampleError as error:
            return job.failed(p, error)
        return job.run(p, values)
