"""The installed wheel: where the package and its library come from, its metadata."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nfslock


def test_imported_from_the_installed_wheel_not_the_source_tree():
    installed = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert Path(nfslock.__file__).resolve().parent == installed / "nfslock"


def test_the_bundled_library_is_loaded():
    assert nfslock.library_origin == "bundled"
    lib = Path(nfslock.library_path)
    assert lib.parent == Path(nfslock.__file__).resolve().parent
    # Named by its SONAME: libnfslock.so.MAJOR.MINOR for 0.x, libnfslock.so.MAJOR from 1.0.
    major, minor = nfslock.__version__.split(".")[:2]
    assert lib.name == (f"libnfslock.so.0.{minor}" if major == "0" else f"libnfslock.so.{major}")
    # Not group- or world-writable.
    assert lib.stat().st_mode & 0o022 == 0


def test_versions_agree():
    assert nfslock.library_version() == nfslock.__version__
    assert importlib.metadata.version("nfslock") == nfslock.__version__


def test_typed():
    assert (Path(nfslock.__file__).parent / "py.typed").is_file()


def test_wheel_metadata():
    wheel = Path(os.environ["NFSLOCK_TEST_WHEEL"])
    # The platform tag, not py3-none-any: it bundles a shared library.
    assert re.fullmatch(rf"nfslock-{re.escape(nfslock.__version__)}-py3-none-linux_[a-z0-9_]+\.whl", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"nfslock-{nfslock.__version__}.dist-info"
        meta = z.read(f"{info}/WHEEL").decode()
        metadata = z.read(f"{info}/METADATA").decode()
        lib = next(n for n in names if n.startswith("nfslock/libnfslock.so."))
        # Stripped of debug info (the release build carries it).
        assert z.getinfo(lib).file_size < 4 << 20
    assert "Root-Is-Purelib: false" in meta
    assert re.search(r"^Tag: py3-none-linux_", meta, re.M)
    assert "nfslock/py.typed" in names
    assert re.search(r"^Name: nfslock$", metadata, re.M)
    assert re.search(rf"^Version: {re.escape(nfslock.__version__)}$", metadata, re.M)


def _import_in_child(env_changes, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("NFSLOCK_LIBRARY", "LD_LIBRARY_PATH")}
    env.update(env_changes)
    code = "import nfslock; print(nfslock.library_origin, nfslock.library_path)"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)


def test_nfslock_library_overrides_the_bundled_copy(tmp_path):
    copy = tmp_path / "libnfslock-copy.so"
    shutil.copy(nfslock.library_path, copy)
    r = _import_in_child({"NFSLOCK_LIBRARY": str(copy)}, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["NFSLOCK_LIBRARY", str(copy)]


def test_a_bad_nfslock_library_is_an_error_not_a_fallback(tmp_path):
    r = _import_in_child({"NFSLOCK_LIBRARY": str(tmp_path / "missing.so")}, tmp_path)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "NFSLOCK_LIBRARY" in r.stderr and "missing.so" in r.stderr


def test_without_a_bundled_copy_the_system_library_is_used(tmp_path):
    # The package without its library, and the library where the loader looks for it.
    pkg = tmp_path / "site" / "nfslock"
    shutil.copytree(Path(nfslock.__file__).parent, pkg, ignore=shutil.ignore_patterns("libnfslock.so*", "__pycache__"))
    libdir = tmp_path / "lib"
    libdir.mkdir()
    shutil.copy(nfslock.library_path, libdir / Path(nfslock.library_path).name)
    r = _import_in_child({"PYTHONPATH": str(pkg.parent), "LD_LIBRARY_PATH": str(libdir)}, tmp_path)
    assert r.returncode == 0, r.stderr
    origin, path = r.stdout.split()
    assert origin == "system"
    assert path.startswith("libnfslock.so")  # a name for the loader to search, not a path
