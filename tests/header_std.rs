//! include/nfslock.h as C and C++ compilers of every supported standard see it: it must
//! compile, included twice, with -Wall -Wextra -Werror -pedantic under C89, C99, C11 and
//! C++11, C++14, C++17 (gcc and g++), and it must define no macro outside NFSLOCK_*.

use std::path::Path;
use std::process::Command;

/// A translation unit that uses every kind of thing the header declares: macros in `#if`
/// and in expressions, typedefs of the opaque handles, the struct, functions with
/// out-parameters and a callback. C89-clean: no `//`, declarations before statements.
const USER: &str = r#"#include "nfslock.h"
#include "nfslock.h" /* the include guard holds */

#if !NFSLOCK_VERSION_AT_LEAST(0, 0, 0) || NFSLOCK_VERSION_AT_LEAST(100, 0, 0)
#error "NFSLOCK_VERSION_AT_LEAST is wrong"
#endif
#if NFSLOCK_VERSION != NFSLOCK_VERSION_MAJOR * 10000 + NFSLOCK_VERSION_MINOR * 100 + NFSLOCK_VERSION_PATCH
#error "NFSLOCK_VERSION is not MAJOR * 10000 + MINOR * 100 + PATCH"
#endif

static int work(void *ctx)
{
    return ctx == NULL;
}

int use_api(void);
int use_api(void)
{
    const char *version = NFSLOCK_VERSION_STRING;
    nfslock *lock = NULL;
    nfslock_options *options = NULL;
    nfslock_session *session = NULL;
    nfslock_info info;
    uint64_t ids[4];
    size_t n_locked = 0;
    uint64_t token = 0;
    int result = 0;
    int rc = NFSLOCK_VERSION_CHECK();

    rc |= nfslock_options_new(&options);
    rc |= nfslock_options_set_lease_ms(options, NFSLOCK_LEASE_MIN_MS);
    rc |= nfslock_acquire("x", options, -1, &lock);
    rc |= nfslock_fencing_token(lock, &token);
    rc |= nfslock_unlock(lock);
    nfslock_options_free(options);
    rc |= nfslock_inspect("x", 0, &info);
    rc |= info.state == NFSLOCK_STATE_HELD_BY_CALLER;
    rc |= nfslock_critical_section("x", NULL, 0, work, NULL, &result);
    rc |= nfslock_session_open("d", NULL, 0, &session);
    rc |= nfslock_session_make_new_ids(session, 4, ids);
    rc |= nfslock_session_lock_ids(session, ids, 4, ids, &n_locked);
    rc |= nfslock_session_close(session);
    return rc + (version[0] == '0') + (NFSLOCK_MAX_IDS_PER_CALL > 0) + (int)token;
}
"#;

const STANDARDS: &[(&str, &str, &str)] = &[
    ("gcc", "c", "c89"),
    ("gcc", "c", "c99"),
    ("gcc", "c", "c11"),
    ("g++", "c++", "c++11"),
    ("g++", "c++", "c++14"),
    ("g++", "c++", "c++17"),
];

fn include_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/include"))
}

#[test]
fn header_compiles_under_every_standard() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut failures = Vec::new();
    for (compiler, lang, std) in STANDARDS {
        let source = dir.path().join(format!("user-{std}.{}", if *lang == "c" { "c" } else { "cpp" }));
        std::fs::write(&source, USER).expect("write the test source");
        let out = Command::new(compiler)
            .args([&format!("-std={std}"), "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-x", lang])
            .arg(&source)
            .arg("-I")
            .arg(include_dir())
            .output()
            .unwrap_or_else(|e| panic!("running {compiler} (scripts/deps installs gcc and g++): {e}"));
        if !out.status.success() {
            failures.push(format!("{compiler} -std={std}:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "include/nfslock.h does not compile:\n{}", failures.join("\n"));
}

/// Every `#define` of the header, by name.
fn defined_macros(header: &str) -> Vec<String> {
    header
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .filter_map(|l| l.trim_start().strip_prefix("define"))
        .filter_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| !w.is_empty()))
        .map(str::to_string)
        .collect()
}

#[test]
fn header_defines_only_nfslock_macros() {
    let header = std::fs::read_to_string(include_dir().join("nfslock.h")).expect("read include/nfslock.h");
    let macros = defined_macros(&header);
    assert!(macros.iter().any(|m| m == "NFSLOCK_VERSION"), "found no NFSLOCK_VERSION among {macros:?}");
    let foreign: Vec<_> = macros.iter().filter(|m| !m.starts_with("NFSLOCK_")).collect();
    assert!(foreign.is_empty(), "include/nfslock.h defines macros outside NFSLOCK_*: {foreign:?}");
}

#[test]
fn macro_scanner_sees_every_define() {
    let text = "#define A 1\n#  define B_2(x) x\n  #define NFSLOCK_C\n/* #define D */ int x;\n";
    assert_eq!(defined_macros(text), ["A", "B_2", "NFSLOCK_C"]);
}
