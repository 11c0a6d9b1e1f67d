"""The package's version: always the version of the libnfslock it is built with
(build-wheel refuses to build when it differs from Cargo.toml's)."""

__version__ = "0.1.0"
