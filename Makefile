# Makefile for libnfslock: a thin layer over cargo for what cargo does not do
# (installing a C library with its header and pkg-config file, the C demo, the full
# test run). Targets:
#
#   make build                      cargo build --release --workspace (the library and
#                                   the nfslock command, cli/), nfslock(1), and the
#                                   static library's system libraries for the .pc file
#   make install [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib]
#                [INCLUDEDIR=] [MANDIR=$(PREFIX)/share/man] [URL=]
#                                   copies what `make build` made (never builds: run
#                                   `make build` as yourself first, then install as
#                                   root): lib/libnfslock.so.X.Y.Z (+ .so.0.Y for 0.x,
#                                   .so links), lib/libnfslock.a (both stripped of
#                                   debug info), include/nfslock.h,
#                                   lib/pkgconfig/nfslock.pc, man3/nfslock.3,
#                                   bin/nfslock, man1/nfslock.1
#   make uninstall [PREFIX=] [DESTDIR=] [LIBDIR=] [MANDIR=]
#   make demo [PREFIX=/usr/local] [DEMO_ARGS=/tmp/some-path]
#                                   build, install, then build examples/c/demo.c
#                                   against the installed tree with pkg-config and
#                                   run it
#   make test                       scripts/deps, cargo fmt --check, clippy (warnings
#                                   are errors; the library and the nfslock command),
#                                   cargo test --all-targets, -p nfslock-cli and --doc, rustdoc
#                                   (warnings are errors; the multi-host
#                                   rig included, on faultfs and on a real NFS
#                                   server), the rig's filesystem's own tests and
#                                   its NFS client's (make test-nfs-client),
#                                   60 s of fuzzing (scripts/fuzz check),
#                                   scripts/test-install (THE project test command)
#   make test-nfs                   the rig on a real NFS server alone (as root):
#                                   rig/nfsfs's own tests, then the real-NFS
#                                   scenarios (tests/multihost/nfs.rs)
#   make soak-nfs [SOAK_ROUNDS=16667]
#                                   a long real-NFS exclusion run: 3 hosts x 2
#                                   processes x SOAK_ROUNDS, 10% lost replies
#   make fuzz [FUZZ_SECONDS=3600] [FUZZ_TARGETS=...]
#                                   fuzz the parsers, each target for FUZZ_SECONDS
#                                   (scripts/fuzz, fuzz/README.md)
#   make test-cinstall              scripts/test-cinstall: `cargo cinstall` (cargo-c) into
#                                   a temporary prefix, checked like make install;
#                                   installs cargo-c first if missing (about 14 min),
#                                   hence not part of `make test`
#   make header                     regenerate include/nfslock.h (cbindgen, via a test)
#   make clean                      cargo clean

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
PKG_CONFIG ?= pkg-config
INSTALL ?= install
STRIP ?= strip
# The project's home page for the .pc file's URL field; none is published yet, so a
# packager passes it (make install URL=...) and the field is left out without one.
URL ?=
# CC defaults to cc in GNU make already.

# Where cargo puts its output; honour CARGO_TARGET_DIR like cargo does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release

# The version comes from Cargo.toml's [package] table, so it is written in one place.
VERSION := $(shell sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
ifeq ($(VERSION),)
$(error could not read the package version from Cargo.toml)
endif
# The SONAME is libnfslock.so.$(SOVER): MAJOR.MINOR for 0.x, MAJOR from 1.0 on, as
# build.rs sets it and as cargo-c (cargo cinstall) names the library.
MAJOR := $(firstword $(subst ., ,$(VERSION)))
MINOR := $(word 2,$(subst ., ,$(VERSION)))
SOVER := $(if $(filter 0,$(MAJOR)),$(MAJOR).$(MINOR),$(MAJOR))

# GNU coding standards' names; LIBDIR may be a multiarch directory
# (LIBDIR=$(PREFIX)/lib/x86_64-linux-gnu): the .pc file follows it.
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
SHARED = libnfslock.so.$(VERSION)

# The nfslock command (cli/) and its man page, rendered from its argument parser.
CLI_MAN := $(TARGET_DIR)/man/nfslock.1

# --- native-static-libs -------------------------------------------------------
# A C program linking the static library must also link the system libraries Rust's
# std and our dependencies need (-lgcc_s -lpthread ... ); they go into the .pc file's
# Libs.private. Only rustc knows that list, and it prints it
# ("note: native-static-libs: ...") only while it actually compiles the crate as a
# staticlib. To get it reliably, without churning the normal release build:
#   * compile in a separate target dir (so `cargo build --release` stays fresh),
#   * `cargo clean -p nfslock` there first, so rustc really runs for our crate
#     (dependencies stay compiled; only this crate is rebuilt),
#   * redo it only when a Rust input changed (make's own dependency check).
NATIVE_LIBS := $(TARGET_DIR)/native-static-libs.txt
NATIVE_LIBS_TARGET_DIR := $(TARGET_DIR)/native-static-libs
RUST_INPUTS := Cargo.toml build.rs $(wildcard Cargo.lock) $(shell find src -type f 2>/dev/null)

# The demo, built against the installed tree (not the build tree).
DEMO := $(TARGET_DIR)/c/nfslock-demo
DEMO_CFLAGS ?= -std=c11 -Wall -Wextra -Werror -pedantic -O2 -g
DEMO_ARGS ?=

.PHONY: test-cinstall all build check-built install install-lib install-man install-bin uninstall uninstall-lib uninstall-man uninstall-bin demo test test-nfs-client test-nfs soak-nfs fuzz header clean

all: build

# What `install` copies; `build` makes all of it.
BUILT := $(RELEASE_DIR)/libnfslock.so $(RELEASE_DIR)/libnfslock.a $(NATIVE_LIBS) \
	$(RELEASE_DIR)/nfslock $(CLI_MAN)
# Sources whose change cargo would rebuild the library for (an install of an older
# build is refused).
BUILD_SOURCES := build.rs src/ffi/exports.map $(shell find src -type f -name '*.rs' 2>/dev/null)

build:
	$(CARGO) build --release --workspace
	@mkdir -p $(dir $(CLI_MAN))
	$(RELEASE_DIR)/nfslock-mangen $(CLI_MAN)
	@$(MAKE) --no-print-directory $(NATIVE_LIBS)

$(NATIVE_LIBS): $(RUST_INPUTS)
	@mkdir -p $(TARGET_DIR)
	@echo "computing native-static-libs (release build in $(NATIVE_LIBS_TARGET_DIR))"
	$(CARGO) clean --release -p nfslock --target-dir $(NATIVE_LIBS_TARGET_DIR)
	$(CARGO) rustc --release --lib --crate-type staticlib --color never \
		--target-dir $(NATIVE_LIBS_TARGET_DIR) -- --print native-static-libs \
		2>$@.log || { cat $@.log >&2; exit 1; }
	sed -n 's/^note: native-static-libs: *//p' $@.log >$@.tmp
	@test -s $@.tmp || { cat $@.log >&2; \
		echo "error: rustc printed no native-static-libs line" >&2; exit 1; }
	mv $@.tmp $@
	@echo "native-static-libs: $$(cat $@)"

# `install` only copies: run as root, it must not build (cargo would write root-owned
# files into the user's target/ and ~/.cargo). It refuses a missing or stale build.
check-built:
	@for f in $(BUILT); do test -f "$$f" || { \
		echo "error: $$f is missing: run \`make build\` first (install only copies what it made)" >&2; \
		exit 1; }; done
	@newer=$$(find $(BUILD_SOURCES) -newer $(RELEASE_DIR)/libnfslock.so 2>/dev/null); \
	test -z "$$newer" || { \
		echo "error: the build is stale, changed since: $$newer" >&2; \
		echo "error: run \`make build\` again before \`make install\`" >&2; exit 1; }
	@newer=$$(find cli/src -type f -newer $(RELEASE_DIR)/nfslock 2>/dev/null); \
	test -z "$$newer" || { \
		echo "error: the nfslock command's build is stale, changed since: $$newer" >&2; \
		echo "error: run \`make build\` again before \`make install\`" >&2; exit 1; }
	@test -f include/nfslock.h || { \
		echo "error: include/nfslock.h is missing (make header)" >&2; exit 1; }

# The pieces of `install`, so that other installed parts (bin/, man1/) slot in beside
# them as install-NAME targets.
install: check-built install-lib install-man install-bin

install-lib:
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 0755 $(RELEASE_DIR)/libnfslock.so $(DESTDIR)$(LIBDIR)/$(SHARED)
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/$(SHARED)
	ln -sfn $(SHARED) $(DESTDIR)$(LIBDIR)/libnfslock.so.$(SOVER)
	ln -sfn libnfslock.so.$(SOVER) $(DESTDIR)$(LIBDIR)/libnfslock.so
	$(INSTALL) -m 0644 $(RELEASE_DIR)/libnfslock.a $(DESTDIR)$(LIBDIR)/libnfslock.a
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libnfslock.a
	$(INSTALL) -m 0644 include/nfslock.h $(DESTDIR)$(INCLUDEDIR)/nfslock.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
		-e "s|@LIBS_PRIVATE@|$$(cat $(NATIVE_LIBS))|g" \
		-e '$(if $(URL),s|@URL@|$(URL)|,/^URL:/d)' \
		pkgconfig/nfslock.pc.in >$(TARGET_DIR)/nfslock.pc
	$(INSTALL) -m 0644 $(TARGET_DIR)/nfslock.pc $(DESTDIR)$(PKGCONFIGDIR)/nfslock.pc
	@# Refresh the loader cache for a real system install (root, no staging DESTDIR,
	@# a prefix the loader searches); harmless to skip anywhere else.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && \
		{ [ "$(PREFIX)" = /usr/local ] || [ "$(PREFIX)" = /usr ]; } && \
		command -v ldconfig >/dev/null; then echo ldconfig; ldconfig; fi

# The nfslock command (stripped like the libraries) and nfslock(1).
install-bin:
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 0755 $(RELEASE_DIR)/nfslock $(DESTDIR)$(BINDIR)/nfslock
	$(STRIP) --strip-debug $(DESTDIR)$(BINDIR)/nfslock
	$(INSTALL) -m 0644 $(CLI_MAN) $(DESTDIR)$(MANDIR)/man1/nfslock.1

install-man:
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 0644 docs/man/nfslock.3 $(DESTDIR)$(MANDIR)/man3/nfslock.3

uninstall: uninstall-lib uninstall-man uninstall-bin

uninstall-lib:
	rm -f $(DESTDIR)$(LIBDIR)/$(SHARED) $(DESTDIR)$(LIBDIR)/libnfslock.so.$(SOVER) \
		$(DESTDIR)$(LIBDIR)/libnfslock.so $(DESTDIR)$(LIBDIR)/libnfslock.a \
		$(DESTDIR)$(INCLUDEDIR)/nfslock.h $(DESTDIR)$(PKGCONFIGDIR)/nfslock.pc

uninstall-bin:
	rm -f $(DESTDIR)$(BINDIR)/nfslock $(DESTDIR)$(MANDIR)/man1/nfslock.1

uninstall-man:
	rm -f $(DESTDIR)$(MANDIR)/man3/nfslock.3

# The demo compiles against what `install` put under PREFIX, found through
# pkg-config, so it also checks the installed header and .pc file. The rpath lets it
# run from any PREFIX without LD_LIBRARY_PATH or ldconfig.
demo: build
	@test -z "$(DESTDIR)" || { \
		echo "error: make demo runs the installed library: DESTDIR is not supported" >&2; \
		exit 1; }
	@$(MAKE) --no-print-directory install
	@mkdir -p $(dir $(DEMO))
	flags=$$(PKG_CONFIG_PATH=$(PKGCONFIGDIR) $(PKG_CONFIG) --cflags --libs nfslock) && \
		$(CC) $(DEMO_CFLAGS) -o $(DEMO) examples/c/demo.c $$flags -Wl,-rpath,$(LIBDIR)
	$(DEMO) $(DEMO_ARGS)

test:
	scripts/deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --all-targets
	$(CARGO) test -p nfslock-cli
	$(CARGO) test --doc
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps
	$(CARGO) test --manifest-path rig/faultfs/Cargo.toml --target-dir $(TARGET_DIR)/rig-faultfs
	$(MAKE) test-nfs-client
	scripts/fuzz check 60
	scripts/test-install
	bindings/python/test

# The rig on a real NFS server. Its scenarios (tests/multihost/nfs.rs, about 2
# minutes on 2 cores) are a test of the multihost target, so `cargo test
# --all-targets` in `test` runs them; `test` adds the NFS client's own unit tests.
# `make test-nfs` runs both alone.
test-nfs-client:
	$(CARGO) test --release --locked --manifest-path rig/nfsfs/Cargo.toml --target-dir $(TARGET_DIR)/rig-nfsfs

test-nfs: test-nfs-client
	scripts/deps
	$(CARGO) test --test multihost nfs::nfs_scenarios -- --nocapture

# A long real-NFS run (README.md, the rig's table): 3 hosts x 2 processes x
# SOAK_ROUNDS acquisitions with 10% of the replies of every changing procedure lost.
SOAK_ROUNDS ?= 16667
soak-nfs:
	scripts/deps
	NFSLOCK_NFS_SOAK_ROUNDS=$(SOAK_ROUNDS) $(CARGO) test --test multihost nfs::nfs_scenarios -- --nocapture

# A long fuzzing run of the parsers (the short one is part of `make test`).
FUZZ_SECONDS ?= 3600
FUZZ_TARGETS ?=
fuzz:
	scripts/fuzz run --time $(FUZZ_SECONDS) $(FUZZ_TARGETS)

test-cinstall:
	scripts/test-cinstall

# The Python package's wheel, the library bundled (bindings/python/README.md).
.PHONY: python-wheel
python-wheel:
	bindings/python/build-wheel $(TARGET_DIR)/wheels

# The header is generated by cbindgen inside a test, which compares it byte for byte
# with include/nfslock.h; with NFSLOCK_UPDATE_HEADER=1 it rewrites the file instead.
header:
	NFSLOCK_UPDATE_HEADER=1 $(CARGO) test --test header

clean:
	$(CARGO) clean
