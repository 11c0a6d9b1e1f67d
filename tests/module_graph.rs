//! The library's module graph: no cycles, and the layers point one way.
//!
//! Reads every `src/**/*.rs`, strips comments and string literals, and collects each
//! module's dependencies from `use` trees and paths in code: `crate::x::...`,
//! `super::...` (`super::NAME` is the sibling module NAME if there is one, else the
//! parent module's own items), `self::x::...` and `x::...` for a child module `x`.
//! Inline modules (`mod tests { ... }`) count as part of their file. Nodes are the
//! crate's top-level modules (ffi, session, lockfile, record, ...) and the session
//! layer's submodules (session::token, session::counter, ...): everything inside
//! another top-level module (lockfile's or ffi's own files) is one node.
//!
//! Checked: the graph has no cycle (each one found is printed, with the file and line
//! of every edge in it); the crate-level edges go down the layers in `LAYERS` only
//! (ffi -> session -> lockfile -> process services -> record format -> system calls);
//! the session layer's edges go down `SESSION_LAYERS` only. A module missing from the
//! layer lists fails the test, so that the lists cannot go stale. The analyzer itself
//! is tested on planted sources (a back edge, a `super::` cycle, a cycle through a
//! child module) so that the checks are known to be able to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, highest layer first. A module may use modules of its own layer
/// or lower layers only (cycles within a layer are caught by the cycle check).
const LAYERS: &[&[&str]] = &[
    // The fuzz targets' entry points: they drive the parsers of every layer below.
    &["fuzzing"],
    &["ffi"],
    // The lock manager (its directory backend's locks are lock files and leases) and
    // sessions: two families side by side, neither using the other.
    &["manager", "session"],
    // Leases: lock files whose holders renew them.
    &["lease"],
    &["lockfile"],
    // Fencing counters, used by plain locks and leases.
    &["fence"],
    // Process-wide services both families use: fork generation, hooks, identity.
    &["process"],
    &["host"],
    // The back-off delays every waiter sleeps by.
    &["backoff"],
    // The record format.
    &["record"],
    &["sexp"],
    // System calls, randomness, errors.
    &["fsops", "random", "error", "clock"],
    &["errno"],
];

/// The session layer's submodules, highest first: its unit tests (which drive whole
/// sessions), the facade (mod.rs: `Session`), the heartbeat thread and the operations
/// (allocation; maintenance: create, check, repair, close), the counter's token, the
/// lease and the reaper, the session's state in memory, the counter, ID locks,
/// liveness and the guard, and the repository's file formats and layout at the bottom.
const SESSION_LAYERS: &[&[&str]] = &[
    &["session::tests"],
    &["session"],
    &["session::heartbeat", "session::alloc", "session::maintenance"],
    &["session::token"],
    &["session::lease", "session::reaper"],
    &["session::state"],
    &["session::counter", "session::idlock", "session::liveness", "session::guard"],
    &["session::record", "session::files"],
    &["session::layout"],
];

/// One dependency, with where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

/// A source file: its module path (`["session", "token"]`) and text.
struct Source {
    module: Vec<String>,
    file: String,
    text: String,
}

fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.strip_suffix(".rs").unwrap().to_string();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

fn read_sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap();
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(Source { module: module_of(rel), file: format!("src/{}", rel.display()), text });
            }
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Path,
    Open,
    Close,
    Comma,
    Semi,
    Other(char),
}

/// Tokens with their line numbers; comments, strings and char literals dropped.
fn tokenize(src: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let count_lines = |from: usize, to: usize, line: &mut usize| *line += b[from..to].iter().filter(|&&c| c == '\n').count();
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let start = i;
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            count_lines(start, i, &mut line);
        } else if c == '"' || ((c == 'r' || c == 'b') && raw_or_byte_string_at(&b, i)) {
            let start = i;
            i = skip_string(&b, i);
            count_lines(start, i, &mut line);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a, 'static).
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // r#ident
            if word == "r" && b.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((
                match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    ';' => Tok::Semi,
                    other => Tok::Other(other),
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// Whether a raw string (r"..", r#".."#, br"..") or byte string (b"..") starts at `i`.
fn raw_or_byte_string_at(b: &[char], i: usize) -> bool {
    if i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if b[j] == 'b' {
        j += 1;
        if b.get(j) == Some(&'"') {
            return true;
        }
    }
    if b.get(j) != Some(&'r') {
        return false;
    }
    j += 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    b.get(j) == Some(&'"')
}

fn skip_string(b: &[char], mut i: usize) -> usize {
    if b[i] == 'b' {
        i += 1;
    }
    if b[i] == 'r' {
        i += 1;
        let mut hashes = 0;
        while b[i] == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < b.len() {
            if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                return i + 1 + hashes;
            }
            i += 1;
        }
        return i;
    }
    i += 1; // the opening quote
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The dependency graph of a set of sources.
struct Graph {
    modules: BTreeSet<Vec<String>>,
    edges: Vec<Edge>,
}

/// The node a module path belongs to: the top-level module, or for the session layer
/// its submodule.
fn node(path: &[String]) -> Option<String> {
    match path {
        [] => None,
        [top, sub, ..] if top == "session" => Some(format!("session::{sub}")),
        [top, ..] => Some(top.clone()),
    }
}

impl Graph {
    fn build(sources: &[Source]) -> Graph {
        let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
        let mut g = Graph { modules, edges: Vec::new() };
        for s in sources {
            g.scan(s);
        }
        g.edges.sort();
        g.edges.dedup_by(|a, b| a.from == b.from && a.to == b.to);
        g
    }

    /// The longest known module that is a prefix of `path`.
    fn module_prefix(&self, path: &[String]) -> Vec<String> {
        (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| self.modules.contains(p)).unwrap_or_default()
    }

    /// Resolves a path written in file module `here` (inside `inline` levels of inline
    /// modules): the module it names or names an item of. None: not this crate's.
    fn resolve(&self, here: &[String], inline: usize, segs: &[String]) -> Option<Vec<String>> {
        let first = segs.first()?;
        let (base, rest): (Vec<String>, &[String]) = match first.as_str() {
            "crate" => (Vec::new(), &segs[1..]),
            "self" => (here.to_vec(), &segs[1..]),
            "super" => {
                let mut levels = segs.iter().take_while(|s| *s == "super").count();
                let rest = &segs[levels..];
                // Inside an inline module, the first `super`s only leave it.
                let leave = levels.min(inline);
                levels -= leave;
                if levels > here.len() {
                    return None;
                }
                (here[..here.len() - levels].to_vec(), rest)
            }
            name => {
                let mut child = here.to_vec();
                child.push(name.to_string());
                if !self.modules.contains(&child) {
                    return None;
                }
                (here.to_vec(), segs)
            }
        };
        let mut full = base;
        full.extend(rest.iter().cloned());
        Some(self.module_prefix(&full))
    }

    fn add(&mut self, s: &Source, target: Vec<String>, line: usize) {
        let (Some(from), Some(to)) = (node(&s.module), node(&target)) else { return };
        if from != to {
            self.edges.push(Edge { from, to, file: s.file.clone(), line });
        }
    }

    fn scan(&mut self, s: &Source) {
        let toks = tokenize(&s.text);
        // Brace depths at which inline modules end.
        let mut inline_ends: Vec<usize> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        while i < toks.len() {
            let (tok, line) = (&toks[i].0, toks[i].1);
            match tok {
                Tok::Open => depth += 1,
                Tok::Close => {
                    if inline_ends.last() == Some(&depth) {
                        inline_ends.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                Tok::Ident(w) if w == "mod" => {
                    if let (Some((Tok::Ident(_), _)), Some((Tok::Open, _))) = (toks.get(i + 1), toks.get(i + 2)) {
                        inline_ends.push(depth + 1);
                    }
                }
                Tok::Ident(w) if w == "use" => {
                    let mut paths = Vec::new();
                    let end = use_tree(&toks, i + 1, &mut Vec::new(), &mut paths);
                    for (segs, line) in paths {
                        if let Some(t) = self.resolve(&s.module, inline_ends.len(), &segs) {
                            self.add(s, t, line);
                        }
                    }
                    i = end;
                    continue;
                }
                Tok::Ident(w) if matches!(toks.get(i + 1), Some((Tok::Path, _))) && !preceded_by_path(&toks, i) => {
                    let mut segs = vec![w.clone()];
                    let mut j = i + 1;
                    while let (Some((Tok::Path, _)), Some((Tok::Ident(next), _))) = (toks.get(j), toks.get(j + 1)) {
                        segs.push(next.clone());
                        j += 2;
                    }
                    if let Some(t) = self.resolve(&s.module, inline_ends.len(), &segs) {
                        self.add(s, t, line);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn preceded_by_path(toks: &[(Tok, usize)], i: usize) -> bool {
    i > 0 && toks[i - 1].0 == Tok::Path
}

/// Parses a use tree from `i`, pushing every full path (with `prefix`) into `out`;
/// returns the index after it (past the `;` at the top level).
fn use_tree(toks: &[(Tok, usize)], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) -> usize {
    let depth0 = prefix.len();
    let mut line = toks.get(i).map_or(0, |t| t.1);
    loop {
        match toks.get(i) {
            Some((Tok::Ident(w), l)) if w != "as" => {
                prefix.push(w.clone());
                line = *l;
                i += 1;
            }
            Some((Tok::Ident(_), _)) => {
                // `as NAME`
                i += 2;
            }
            Some((Tok::Path, _)) => i += 1,
            Some((Tok::Other('*'), _)) => i += 1,
            Some((Tok::Open, _)) => {
                i += 1;
                loop {
                    let mut inner = prefix.clone();
                    i = use_tree_inner(toks, i, &mut inner, out);
                    match toks.get(i) {
                        Some((Tok::Comma, _)) => i += 1,
                        Some((Tok::Close, _)) => {
                            i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if matches!(toks.get(i), Some((Tok::Close, _))) {
                        i += 1;
                        break;
                    }
                }
                prefix.truncate(depth0);
                return skip_to_semi(toks, i);
            }
            _ => {
                if prefix.len() > depth0 || depth0 > 0 {
                    out.push((prefix.clone(), line));
                }
                prefix.truncate(depth0);
                return skip_to_semi(toks, i);
            }
        }
    }
}

/// One element of a brace group: a path, maybe followed by its own group. Stops at the
/// `,` or `}` that ends it.
fn use_tree_inner(toks: &[(Tok, usize)], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) -> usize {
    let depth0 = prefix.len();
    let mut line = toks.get(i).map_or(0, |t| t.1);
    loop {
        match toks.get(i) {
            Some((Tok::Ident(w), _)) if w == "as" => i += 2,
            Some((Tok::Ident(w), l)) => {
                prefix.push(w.clone());
                line = *l;
                i += 1;
            }
            Some((Tok::Path, _)) | Some((Tok::Other('*'), _)) => i += 1,
            Some((Tok::Open, _)) => {
                i += 1;
                loop {
                    let mut inner = prefix.clone();
                    i = use_tree_inner(toks, i, &mut inner, out);
                    match toks.get(i) {
                        Some((Tok::Comma, _)) => i += 1,
                        Some((Tok::Close, _)) => {
                            i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if matches!(toks.get(i), Some((Tok::Close, _))) {
                        i += 1;
                        break;
                    }
                }
                prefix.truncate(depth0);
                return i;
            }
            _ => {
                if prefix.len() > depth0 || depth0 > 0 {
                    out.push((prefix.clone(), line));
                }
                prefix.truncate(depth0);
                return i;
            }
        }
    }
}

fn skip_to_semi(toks: &[(Tok, usize)], mut i: usize) -> usize {
    while i < toks.len() && toks[i].0 != Tok::Semi {
        i += 1;
    }
    i + 1
}

/// The cycles of the graph: for every node on one, the shortest cycle through it
/// (each cycle once).
fn cycles(edges: &[Edge]) -> Vec<Vec<Edge>> {
    let mut adj: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        adj.entry(&e.from).or_default().push(e);
        adj.entry(&e.to).or_default();
    }
    let mut out: Vec<Vec<Edge>> = Vec::new();
    let mut seen: BTreeSet<BTreeSet<(String, String)>> = BTreeSet::new();
    for n in adj.keys() {
        // Breadth first from n until n is reached again.
        let mut prev: BTreeMap<&str, &Edge> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*n]);
        'bfs: while let Some(m) = queue.pop_front() {
            for e in &adj[m] {
                if prev.contains_key(e.to.as_str()) {
                    continue;
                }
                prev.insert(&e.to, e);
                if e.to == *n {
                    break 'bfs;
                }
                queue.push_back(&e.to);
            }
        }
        if !prev.contains_key(n) {
            continue;
        }
        let mut cycle = Vec::new();
        let mut at: &str = n;
        loop {
            let e = prev[at];
            cycle.push(e.clone());
            at = &e.from;
            if at == *n {
                break;
            }
        }
        cycle.reverse();
        if seen.insert(cycle.iter().map(|e| (e.from.clone(), e.to.clone())).collect()) {
            out.push(cycle);
        }
    }
    out
}

fn show_cycle(c: &[Edge]) -> String {
    let mut s = c.first().map(|e| e.from.clone()).unwrap_or_default();
    for e in c {
        s.push_str(&format!(" -> {} ({}:{})", e.to, e.file, e.line));
    }
    s
}

/// Edges that go up the given layers (or name a node the layers do not list).
fn layer_violations(edges: &[Edge], layers: &[&[&str]], applies: impl Fn(&str) -> bool) -> Vec<String> {
    let rank = |n: &str| layers.iter().position(|l| l.contains(&n));
    let mut out = Vec::new();
    for e in edges.iter().filter(|e| applies(&e.from) && applies(&e.to)) {
        match (rank(&e.from), rank(&e.to)) {
            (Some(a), Some(b)) if a <= b => {}
            (Some(_), Some(_)) => out.push(format!("{} -> {} points up the layers ({}:{})", e.from, e.to, e.file, e.line)),
            (None, _) => out.push(format!("{} is in no layer of the list: add it ({}:{})", e.from, e.file, e.line)),
            (_, None) => out.push(format!("{} is in no layer of the list: add it ({}:{})", e.to, e.file, e.line)),
        }
    }
    out
}

/// Top-level edges: session's submodules count as session.
fn crate_edges(edges: &[Edge]) -> Vec<Edge> {
    let top = |n: &str| n.split("::").next().unwrap().to_string();
    let mut out: Vec<Edge> =
        edges.iter().map(|e| Edge { from: top(&e.from), to: top(&e.to), ..e.clone() }).filter(|e| e.from != e.to).collect();
    out.sort();
    out.dedup_by(|a, b| a.from == b.from && a.to == b.to);
    out
}

fn crate_graph() -> Graph {
    Graph::build(&read_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = crate_graph();
    assert!(g.edges.iter().any(|e| e.from == "ffi" && e.to == "session"), "the scan found no ffi -> session edge: {:?}", g.edges);
    let found = cycles(&g.edges);
    let edges: Vec<String> = g.edges.iter().map(|e| format!("{} -> {}", e.from, e.to)).collect();
    assert!(
        found.is_empty(),
        "module cycles:\n  {}\n(all edges: {})",
        found.iter().map(|c| show_cycle(c)).collect::<Vec<_>>().join("\n  "),
        edges.join(", ")
    );
}

#[test]
fn the_crate_layers_point_one_way() {
    let g = crate_graph();
    let bad = layer_violations(&crate_edges(&g.edges), LAYERS, |_| true);
    assert!(bad.is_empty(), "crate-level layering:\n  {}", bad.join("\n  "));
}

#[test]
fn the_session_layers_point_one_way() {
    let g = crate_graph();
    let is_session = |n: &str| n == "session" || n.starts_with("session::");
    let listed: BTreeSet<&str> = SESSION_LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut bad = layer_violations(&g.edges, SESSION_LAYERS, is_session);
    for m in g.modules.iter().filter(|m| m.first().is_some_and(|t| t == "session")) {
        let n = node(m).unwrap();
        if !listed.contains(n.as_str()) {
            bad.push(format!("{n} is in no layer of SESSION_LAYERS: add it"));
        }
    }
    assert!(bad.is_empty(), "session layering:\n  {}", bad.join("\n  "));
}

// The analyzer, on planted sources: each check must be able to fail.

fn planted(files: &[(&str, &str)]) -> Graph {
    let sources: Vec<Source> = files
        .iter()
        .map(|(path, text)| Source { module: module_of(Path::new(path)), file: format!("src/{path}"), text: text.to_string() })
        .collect();
    Graph::build(&sources)
}

fn pairs(g: &Graph) -> BTreeSet<(String, String)> {
    g.edges.iter().map(|e| (e.from.clone(), e.to.clone())).collect()
}

#[test]
fn the_analyzer_finds_a_planted_back_edge() {
    let files = [
        ("lib.rs", "pub mod lockfile; pub mod record; pub mod session;"),
        (
            "lockfile/mod.rs",
            "mod claim;\nuse crate::record::Record;\n// crate::session::Session in a comment\nfn f() { let s = \"crate::session::x\"; }",
        ),
        ("lockfile/claim.rs", "fn g() -> crate::session::Session { todo!() }"),
        ("record.rs", "pub struct Record;"),
        ("session/mod.rs", "mod token;\npub struct Session;\nuse crate::lockfile::{self, claim::X};\nfn f() { token::go(); }"),
        ("session/token.rs", "use super::Session;"),
    ];
    let g = planted(&files);
    let p = pairs(&g);
    assert!(p.contains(&("lockfile".into(), "record".into())), "{p:?}");
    assert!(p.contains(&("lockfile".into(), "session".into())), "the path in code is an edge: {p:?}");
    let c: Vec<String> = cycles(&g.edges).iter().map(|c| show_cycle(c)).collect();
    assert_eq!(c.len(), 2, "lockfile <-> session, session <-> session::token: {c:?}");
    assert!(c.iter().any(|c| c.starts_with("lockfile -> session (src/lockfile/claim.rs:1) -> lockfile")), "{c:?}");
    assert!(c.iter().any(|c| c == "session::token -> session (src/session/token.rs:1) -> session::token (src/session/mod.rs:4)"), "{c:?}");
    let bad = layer_violations(&crate_edges(&g.edges), LAYERS, |_| true);
    assert!(bad.iter().any(|b| b.starts_with("lockfile -> session points up")), "{bad:?}");
    // Without the comment and string, only the real edge counts.
    let files2 = [
        files[0],
        ("lockfile/mod.rs", "mod claim;"),
        ("lockfile/claim.rs", "// crate::session"),
        files[3],
        files[4],
        ("session/token.rs", ""),
    ];
    assert!(cycles(&planted(&files2).edges).is_empty());
}

#[test]
fn the_analyzer_resolves_super_self_children_and_inline_modules() {
    let files = [
        ("lib.rs", "pub mod session;"),
        (
            "session/mod.rs",
            "mod a; mod b; mod c;\npub use c::X;\nfn f() { a::run(); }\n#[cfg(test)]\nmod tests { use super::*; use super::b::Y; }",
        ),
        ("session/a.rs", "use super::{b::{self, Y}, c::X as Z};\nfn h(x: &'static str) -> char { 'x' }"),
        ("session/b.rs", "pub struct Y; fn k() { r#\"super::a::f\"#; super::super::session::c::g(); }"),
        ("session/c.rs", "pub struct X; mod inner { use super::super::a; }"),
    ];
    let p = pairs(&planted(&files));
    let want: BTreeSet<(String, String)> = [
        ("session", "session::c"),
        ("session", "session::a"),
        ("session", "session::b"),
        ("session::a", "session::b"),
        ("session::a", "session::c"),
        ("session::b", "session::c"),
        ("session::c", "session::a"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(p, want);
    let c: Vec<String> = cycles(&planted(&files).edges).iter().map(|c| show_cycle(c)).collect();
    assert_eq!(
        c,
        [
            "session::a -> session::c (src/session/a.rs:1) -> session::a (src/session/c.rs:1)",
            "session::b -> session::c (src/session/b.rs:1) -> session::a (src/session/c.rs:1) -> session::b (src/session/a.rs:1)",
        ]
    );
}

#[test]
fn every_source_file_is_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&root);
    let files: BTreeSet<PathBuf> = sources.iter().map(|s| PathBuf::from(&s.file)).collect();
    for must in ["src/lib.rs", "src/ffi/session.rs", "src/session/mod.rs", "src/lockfile/mod.rs", "src/record.rs"] {
        assert!(files.contains(Path::new(must)), "{must} not read: {files:?}");
    }
}
