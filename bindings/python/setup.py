"""Only what pyproject.toml cannot say: the wheel bundles libnfslock.so, so it is tagged
for this platform (py3-none-linux_x86_64, say), not py3-none-any. It has no Python
extension module and calls the library through ctypes, so any Python 3 can use it:
the Python and ABI tags stay py3 and none."""

from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


class BundlesLibrary(Distribution):
    """Not pure: installed into platlib at the wheel's root, like an extension."""

    def has_ext_modules(self):
        return True


class platform_wheel(bdist_wheel):
    def get_tag(self):
        _python, _abi, platform = super().get_tag()
        return "py3", "none", platform

    def run(self):
        if not list((HERE / "nfslock").glob("libnfslock.so*")):
            raise SystemExit("nfslock: no libnfslock.so.* in nfslock/: build the wheel with build-wheel")
        super().run()


setup(distclass=BundlesLibrary, cmdclass={"bdist_wheel": platform_wheel})
