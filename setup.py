"""The optional C extension: the relay's per-read step (wsgate/_relayfast.c).

Optional on purpose: without a compiler the install still succeeds and wsgate uses its
pure-Python relay path (wsgate/runtime/relaypipe.py says which one runs).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the Python path serves
            print(f"wsgate: C extension not built ({exc}); using the Python relay path")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"wsgate: {ext.name} not built ({exc}); using the Python relay path")


setup(
    ext_modules=[
        Extension("wsgate._relayfast", ["wsgate/_relayfast.c"], optional=True),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
