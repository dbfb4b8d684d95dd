"""Wheel build hook: ship cnncli's oneDNN extension compiled, so no compiler is needed at run time.

hatchling runs `OneDNNExtension.initialize` when it builds a wheel (also the editable one
``uv sync`` installs in a clone). In the build environment, which has jax and the oneDNN
wheels (the hook's ``dependencies`` in pyproject.toml), it compiles
``cnncli/native/onednn_conv.cc`` exactly as the first use would
(`cnncli.native.onednn._compile`) into ``cnncli/native/_prebuilt/`` under the name
`cnncli.native.onednn.shipped_name` gives: a digest of the source, jax's version and
oneDNN's version and configuration headers. At run time `cnncli.native.onednn.build`
uses that file only when the installed jax and oneDNN give the same name, else it
builds into the cache as before. The wheel is then platform-specific (linux x86-64).

Where it cannot build (no g++, no oneDNN wheel for the platform, any failure) the hook
says so and the wheel stays pure Python: the extension is built on first use, as before.
``CNNCLI_NO_PREBUILT=1`` skips it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class OneDNNExtension(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or os.environ.get("CNNCLI_NO_PREBUILT", "") not in ("", "0"):
            return
        try:
            built = self._compile()
        except Exception as err:  # any failure: a pure wheel, the extension built on first use
            self.app.display_warning(f"cnncli: the oneDNN extension is not shipped built ({type(err).__name__}: "
                                     f"{str(err).splitlines()[0] if str(err) else ''}); it is built on first use")  # fmt: skip
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install reads cnncli/ from the source tree, _prebuilt/ included
            build_data["force_include"][str(built)] = f"cnncli/native/_prebuilt/{built.name}"
        self.app.display_info(f"cnncli: shipped the oneDNN extension built: {built}")

    def _compile(self) -> Path:
        sys.path.insert(0, self.root)  # this source tree's cnncli, not an installed one
        try:
            import jax

            from cnncli.native import onednn
        finally:
            sys.path.remove(self.root)
        root = onednn.find_root()  # the build environment's oneDNN wheels
        out = onednn.PREBUILT / onednn.shipped_name(root)
        if not out.is_file():
            onednn.PREBUILT.mkdir(exist_ok=True)
            for old in onednn.PREBUILT.glob("libcnncli_onednn-*.so"):  # an older source's or jax's build
                old.unlink()
            onednn._compile(root, onednn._libdnnl(root), jax.ffi.include_dir(), out)
        return out
