//! The C ABI surface, checked three ways:
//! - every exported function (`#[no_mangle]` / `#[export_name]`) in src/ runs its whole body
//!   inside a panic guard (`ffi_guard(...)` or `ffi_guard_ptr(...)`), so no Rust panic can
//!   unwind into C (rustls-ffi once shipped an unguarded entry point);
//! - the functions exported in src/, declared in include/nfslock.h, and present in the
//!   dynamic symbol table of libnfslock.so are the same set;
//! - libnfslock.so exports nothing but `nfslock_*` (and its version node).
//!
//! The sources are scanned with a small lexer rather than a Rust parser: comments and
//! literals are blanked out (keeping byte offsets), then brackets are matched.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "support/cdylib.rs"]
mod cdylib;

/// The calls that may wrap an exported function's body; each catches panics.
const GUARDS: &[&str] = &["ffi_guard", "ffi_guard_code", "ffi_guard_ptr", "ffi_guard_void"];

/// The functions the C API contract names: all must exist.
const CONTRACT: &[&str] = &[
    "nfslock_create",
    "nfslock_blocking_create",
    "nfslock_unlock",
    "nfslock_unlock_path",
    "nfslock_get_hostname_and_pid",
    "nfslock_get_message",
    "nfslock_critical_section",
    "nfslock_strerror",
    "nfslock_last_error",
    "nfslock_version",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// All .rs files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A copy of Rust source with comments and the contents of string, byte and char literals
/// replaced by spaces (newlines kept), so that brackets and keywords can be found in code
/// only. Byte offsets are unchanged, so slices of the original text line up.
fn mask_rust(src: &str) -> Vec<u8> {
    let s = src.as_bytes();
    let mut out = s.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(s.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'/' && s.get(i + 1) == Some(&b'/') {
            let end = s[i..].iter().position(|&b| b == b'\n').map_or(s.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && s.get(i + 1) == Some(&b'*') {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (1, i + 2);
            while j < s.len() && depth > 0 {
                if s[j] == b'/' && s.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == b'*' && s.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == b'r' || ((c == b'b' || c == b'c') && s.get(i + 1) == Some(&b'r'))) && (i == 0 || !ident(s[i - 1])) && {
            let k = if c == b'r' { i + 1 } else { i + 2 };
            let hashes = s[k..].iter().take_while(|&&b| b == b'#').count();
            s.get(k + hashes) == Some(&b'"')
        } {
            // Raw string: r"..", r#".."#, br".." or cr"..": ends at a quote and as many #.
            let k = if c == b'r' { i + 1 } else { i + 2 };
            let hashes = s[k..].iter().take_while(|&&b| b == b'#').count();
            let body = k + hashes + 1;
            let closing = format!("\"{}", "#".repeat(hashes)).into_bytes();
            let end = s[body..].windows(closing.len()).position(|w| w == closing.as_slice()).map_or(s.len(), |n| body + n + closing.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            // "..", b"..", c"..": the prefix letter stays, harmlessly.
            let mut j = i + 1;
            while j < s.len() && s[j] != b'"' {
                j += if s[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', b'x') or a lifetime ('a, 'static).
            let close = if s.get(i + 1) == Some(&b'\\') {
                s[i + 2..].iter().position(|&b| b == b'\'').map(|n| i + 2 + n)
            } else {
                // One UTF-8 character, then a quote.
                let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (s.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match close {
                Some(end) => {
                    blank(&mut out, i, end + 1);
                    i = end + 1;
                }
                None => i += 1, // a lifetime: leave it
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The index just past the bracket matching the one at `open` (masked text).
fn matching(m: &[u8], open: usize) -> usize {
    let mut depth = 0i32;
    for (i, &b) in m.iter().enumerate().skip(open) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets from offset {open}");
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Offsets of the whole word `word` in masked text.
fn find_words(m: &[u8], word: &str) -> Vec<usize> {
    let w = word.as_bytes();
    (0..m.len().saturating_sub(w.len() - 1))
        .filter(|&i| &m[i..i + w.len()] == w && (i == 0 || !is_ident(m[i - 1])) && !matches!(m.get(i + w.len()), Some(&b) if is_ident(b)))
        .collect()
}

fn skip_ws(m: &[u8], mut i: usize) -> usize {
    while i < m.len() && m[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// An exported function found in the sources.
struct Export {
    symbol: String,
    file: PathBuf,
    line: usize,
    /// Why its body is not entirely inside a guard, if it is not.
    problem: Option<String>,
}

/// Checks a function body (masked, without its braces): only `const`/`use` items may
/// come before the guard (they run at compile time), and the guard call must be the
/// body's tail expression, so nothing runs outside it.
fn guard_problem(body: &[u8], original: &str) -> Option<String> {
    let mut i = skip_ws(body, 0);
    loop {
        let rest = &body[i..];
        let item = ["const ", "use "].iter().any(|k| rest.starts_with(k.as_bytes()));
        if !item {
            break;
        }
        // Skip to the `;` ending the item, outside any brackets.
        let mut j = i;
        while j < body.len() && body[j] != b';' {
            j = if matches!(body[j], b'(' | b'[' | b'{') { matching(body, j) } else { j + 1 };
        }
        i = skip_ws(body, j + 1);
    }
    let start = i;
    let name_end = start + body[start..].iter().take_while(|&&b| is_ident(b)).count();
    let name = std::str::from_utf8(&body[start..name_end]).unwrap_or("");
    let first_code = || original[start..].lines().next().unwrap_or("").trim().to_string();
    if !GUARDS.contains(&name) || body.get(name_end) != Some(&b'(') {
        return Some(format!("its body does not begin with a guard call ({}): `{}`", GUARDS.join(" or "), first_code()));
    }
    let after = skip_ws(body, matching(body, name_end));
    if after < body.len() {
        let tail = original[after..].trim();
        return Some(format!("code after the {name}(...) call runs outside it: `{tail}`"));
    }
    None
}

/// Every `#[no_mangle]` / `#[unsafe(no_mangle)]` / `#[export_name = ".."]` fn in `file`.
fn exports_in(file: &Path) -> Vec<Export> {
    let src = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    exports_in_text(file, &src)
}

fn exports_in_text(file: &Path, src: &str) -> Vec<Export> {
    let m = mask_rust(src);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(hash) = m[i..].iter().position(|&b| b == b'#').map(|n| i + n) {
        i = hash + 1;
        if m.get(hash + 1) != Some(&b'[') {
            continue;
        }
        let attr_end = matching(&m, hash + 1);
        let attr: String = String::from_utf8_lossy(&m[hash + 2..attr_end - 1]).split_whitespace().collect();
        let exported = attr == "no_mangle" || attr == "unsafe(no_mangle)" || attr.starts_with("export_name");
        if !exported {
            continue;
        }
        // The item the attribute belongs to: the next `fn` (after more attributes and
        // qualifiers), or a static, which is an export we do not allow.
        let fn_at = find_words(&m[attr_end..], "fn").first().map(|&n| attr_end + n);
        let static_at = find_words(&m[attr_end..], "static").first().map(|&n| attr_end + n);
        let line = src[..hash].lines().count() + 1;
        if let (Some(st), Some(f)) = (static_at, fn_at) {
            if st < f && !m[attr_end..st].contains(&b';') {
                panic!("{}:{line}: an exported static; the C API exports functions only", file.display());
            }
        }
        let fn_at = fn_at.unwrap_or_else(|| panic!("{}:{line}: no fn after #[{attr}]", file.display()));
        let name_start = skip_ws(&m, fn_at + 2);
        let name_end = name_start + m[name_start..].iter().take_while(|&&b| is_ident(b)).count();
        let symbol = if attr.starts_with("export_name") {
            // The literal is blanked in the mask; read it from the source.
            let text = &src[hash..attr_end];
            text.split('"').nth(1).unwrap_or_default().to_string()
        } else {
            src[name_start..name_end].to_string()
        };
        let params = name_start + m[name_start..].iter().position(|&b| b == b'(').expect("fn has parameters");
        let params_end = matching(&m, params);
        let open = params_end + m[params_end..].iter().position(|&b| b == b'{').expect("fn has a body");
        let close = matching(&m, open);
        let problem = guard_problem(&m[open + 1..close - 1], &src[open + 1..close - 1]);
        out.push(Export { symbol, file: file.to_path_buf(), line, problem });
        i = close;
    }
    out
}

fn source_exports() -> Vec<Export> {
    rust_files(&root().join("src")).iter().flat_map(|f| exports_in(f)).collect()
}

/// Function names declared in the C header (comments removed first).
fn header_functions() -> BTreeSet<String> {
    let path = root().join("include/nfslock.h");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    // Strip /* */ and // comments: the documentation mentions the functions too.
    let mut code = String::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |n| &r[n + 2..]);
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |n| &r[n..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let bytes = code.as_bytes();
    let mut names = BTreeSet::new();
    for at in find_words_prefix(bytes, "nfslock_") {
        let end = at + bytes[at..].iter().take_while(|&&b| is_ident(b)).count();
        if bytes.get(skip_ws(bytes, end)) == Some(&b'(') {
            names.insert(code[at..end].to_string());
        }
    }
    names
}

/// Offsets of identifiers starting with `prefix`.
fn find_words_prefix(m: &[u8], prefix: &str) -> Vec<usize> {
    let p = prefix.as_bytes();
    (0..m.len().saturating_sub(p.len() - 1)).filter(|&i| &m[i..i + p.len()] == p && (i == 0 || !is_ident(m[i - 1]))).collect()
}

/// (name, type) of every defined dynamic symbol of the cdylib, version suffixes removed.
fn dynamic_symbols() -> Vec<(String, String)> {
    let lib = cdylib::cdylib_dir().unwrap_or_else(|e| panic!("{e}")).join("libnfslock.so");
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .unwrap_or_else(|e| panic!("running nm (binutils) on {}: {e}", lib.display()));
    assert!(out.status.success(), "nm -D {} failed: {}", lib.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().rev();
            let name = f.next()?;
            let kind = f.next()?;
            Some((name.split('@').next().unwrap_or(name).to_string(), kind.to_string()))
        })
        .collect()
}

#[test]
fn every_exported_function_is_panic_guarded() {
    let exports = source_exports();
    assert!(!exports.is_empty(), "found no #[no_mangle] functions under src/");
    let unguarded: Vec<String> =
        exports.iter().filter_map(|e| e.problem.as_ref().map(|p| format!("{}:{}: {}: {p}", e.file.display(), e.line, e.symbol))).collect();
    assert!(unguarded.is_empty(), "exported functions without a panic guard:\n{}", unguarded.join("\n"));

    // The guards themselves must catch panics.
    let boundary: String = rust_files(&root().join("src/ffi")).iter().map(|f| fs::read_to_string(f).expect("read src/ffi")).collect();
    for guard in GUARDS {
        let def = boundary
            .find(&format!("fn {guard}("))
            .or_else(|| boundary.find(&format!("fn {guard}<")))
            .unwrap_or_else(|| panic!("the guard {guard} is not defined in src/ffi"));
        let body_end = boundary[def..].find("\n}").map_or(boundary.len(), |n| def + n);
        assert!(boundary[def..body_end].contains("catch_unwind"), "{guard} does not call catch_unwind");
    }
}

#[test]
fn exports_header_and_symbols_agree() {
    let exports = source_exports();
    let mut in_source = BTreeSet::new();
    for e in &exports {
        assert!(in_source.insert(e.symbol.clone()), "{} is exported twice (second at {}:{})", e.symbol, e.file.display(), e.line);
        assert!(
            e.file.starts_with(root().join("src/ffi")),
            "{} is exported from {}: exports belong in src/ffi/",
            e.symbol,
            e.file.display()
        );
    }
    let missing: Vec<_> = CONTRACT.iter().filter(|f| !in_source.contains(**f)).collect();
    assert!(missing.is_empty(), "functions of the C API contract not exported: {missing:?}");

    let in_header = header_functions();
    assert_eq!(in_source, in_header, "functions exported in src/ffi (left) vs declared in include/nfslock.h (right)");

    let symbols = dynamic_symbols();
    // The version script's node (e.g. NFSLOCK_0) appears as an absolute symbol: not code.
    let is_version_node = |(name, kind): &(String, String)| {
        kind == "A"
            && name.strip_prefix("NFSLOCK_").is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '_'))
    };
    let foreign: Vec<_> = symbols.iter().filter(|s| !is_version_node(s) && !s.0.starts_with("nfslock_")).map(|s| &s.0).collect();
    assert!(foreign.is_empty(), "libnfslock.so exports symbols outside the nfslock_ namespace: {foreign:?}");
    let in_library: BTreeSet<String> = symbols.iter().filter(|s| s.0.starts_with("nfslock_")).map(|s| s.0.clone()).collect();
    assert_eq!(in_source, in_library, "functions exported in src/ffi (left) vs dynamic symbols of libnfslock.so (right)");
}

/// The scanner itself: it must see through comments and literals, and reject every way
/// of running code outside the guard.
#[test]
fn scanner_tells_guarded_from_unguarded() {
    const SAMPLE: &str = r##"
/// Docs may say ffi_guard( or } without confusing the scanner.
#[no_mangle]
pub unsafe extern "C" fn nfslock_good(x: *const c_char) -> c_int {
    const OP: &str = "nfslock_good { ( '";
    use std::ffi::CStr;
    ffi_guard(OP, || {
        let s = r#"}"#; /* } */ let c = '}'; let l: &'static str = "\"}";
        Ok(())
    })
}
#[no_mangle]
pub extern "C" fn nfslock_let_first() -> c_int {
    let p = compute(); // may panic outside the guard
    ffi_guard("op", || Ok(()))
}
#[unsafe(no_mangle)]
pub extern "C" fn nfslock_bound() -> c_int {
    let r = ffi_guard("op", || Ok(()));
    r
}
#[export_name = "nfslock_renamed"]
pub extern "C" fn whatever() -> *const c_char {
    // ffi_guard_ptr(|| x, c"")
    c"text".as_ptr()
}
#[no_mangle]
pub extern "C" fn nfslock_after() -> c_int {
    ffi_guard("op", || Ok(()));
    0
}
#[no_mangle]
pub extern "C" fn nfslock_ptr() -> *const c_char {
    ffi_guard_ptr(|| c"a".as_ptr(), c"")
}
fn helper<'a>(c: char) -> bool { c == '{' || c == '\'' }
"##;
    let found = exports_in_text(Path::new("sample.rs"), SAMPLE);
    let verdicts: Vec<(&str, bool)> = found.iter().map(|e| (e.symbol.as_str(), e.problem.is_none())).collect();
    assert_eq!(
        verdicts,
        [
            ("nfslock_good", true),
            ("nfslock_let_first", false),
            ("nfslock_bound", false),
            ("nfslock_renamed", false),
            ("nfslock_after", false),
            ("nfslock_ptr", true),
        ]
    );
}

/// The names a file binds to the NFSLOCK_0 version (`symbol_versions!(a, b, ...)`).
fn versioned_in(src: &str) -> BTreeSet<String> {
    let Some(start) = src.find("\nsymbol_versions!(") else { return BTreeSet::new() };
    let list = &src[start + "\nsymbol_versions!(".len()..];
    let list = &list[..list.find(')').expect("symbol_versions! call is closed")];
    list.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect()
}

/// A `.symver` must be in the object that defines the function, so each file binds its
/// own exports, all of them, and nothing else (src/ffi/mod.rs, `symbol_versions!`). The
/// linked result is checked by scripts/test-install (readelf: every export @@NFSLOCK_0).
#[test]
fn every_export_is_bound_to_the_version_node_in_its_own_file() {
    let mut problems = Vec::new();
    for file in rust_files(&root().join("src/ffi")) {
        let src = fs::read_to_string(&file).expect("read src/ffi");
        let exported: BTreeSet<String> = exports_in(&file).into_iter().map(|e| e.symbol).collect();
        let versioned = versioned_in(&src);
        if exported != versioned {
            problems.push(format!("{}: exports {exported:?}, symbol_versions! lists {versioned:?}", file.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn version_list_scanner_reads_the_call() {
    let src = "use x;\n\nsymbol_versions!(\n    nfslock_a,\n    nfslock_b,\n);\nfn f() {}\n";
    assert_eq!(versioned_in(src), ["nfslock_a", "nfslock_b"].map(String::from).into_iter().collect());
    assert!(versioned_in("fn f() {}\n").is_empty());
}
