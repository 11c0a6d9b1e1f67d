//! Lock-manager scenarios (issue 12): the directory backend of `nfslock_manager`, one
//! manager directory (created once, by host A) shared by every host, through the C API
//! (rig/worker_manager.c, a worker program of its own). Three scenarios, each under
//! every faultfs fault mode the session rows use and on the real NFS server with lost
//! replies of every procedure that changes something:
//!
//! - IDs: every worker allocates and frees IDs at random, logging each allocation's
//!   return and each free's call; an ID handed to a worker while another's allocation
//!   of it was not yet freed is a violation (read from the logs, and an O_EXCL marker
//!   per ID besides); at the end every ID is free and the lowest free one is 0.
//! - locks: every worker locks random IDs of a small set and, inside, increments that
//!   ID's counter non-atomically (read, pause, write): 0 marker collisions and every
//!   counter exact.
//! - lease: with set_lease_ms, a holder on host A SIGKILLed while holding: B waits out
//!   the lease (never less, and times out while A lives); a process of A's own host
//!   takes it at once; without a lease B never breaks it.
//!
//! NFSLOCK_RIG_ONLY=manager runs them all on faultfs, `manager:ids`, `manager:locks` or
//! `manager:lease` one scenario; NFSLOCK_NFS_ONLY=manager: the real-NFS ones.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::host::{self, count, field, line_field, Backend, Faults, Host, Wire};
use super::nfs::Fleet;
use super::sessions::titled;
use super::{build, describe, Rig, Row, SHORT, WORKER_LIMIT};

/// Every procedure that changes something (NFSv3 numbers, as rig/nfs/lossy takes them).
const CHANGING: &str = "2, 7, 8, 9, 10, 12, 13, 14, 15, 21";
/// The lease of the lease scenario.
const LEASE_MS: u64 = 1000;
/// IDs locked in the counter scenario (0 and 1 allocated, 2 and 3 never).
const COUNTED_IDS: usize = 4;

/// The shape of one run: hosts, processes per host, processes on the server's disk, and
/// each worker's steps (allocation steps or lock rounds).
#[derive(Clone, Copy)]
struct Shape {
    hosts: usize,
    procs: usize,
    on_server: usize,
    steps: u32,
}

impl Shape {
    fn label(&self) -> String {
        let server = if self.on_server > 0 { format!(" + {} on the server", self.on_server) } else { String::new() };
        format!("{}x{}{server}", self.hosts, self.procs)
    }
    fn workers(&self) -> usize {
        self.hosts * self.procs + self.on_server
    }
}

/// Runs `f` with the rig's worker swapped for the manager's (built here).
fn with_worker(rig: &mut Rig, f: impl FnOnce(&mut Rig)) {
    let exe = build::manager_worker(&rig.root, Path::new(env!("CARGO_TARGET_TMPDIR")));
    let saved = std::mem::replace(&mut rig.worker, exe);
    f(rig);
    rig.worker = saved;
}

/// The faultfs rows (`only`: NFSLOCK_RIG_ONLY, `manager` or `manager:NAME`).
pub fn faultfs(rig: &mut Rig, only: Option<&str>) {
    let part = only.and_then(|o| o.strip_prefix("manager:")).filter(|p| !p.is_empty());
    let want = |name: &str| part.is_none_or(|p| p == name);
    let modes = [
        ("clean", Faults::default()),
        ("lost replies 20%", Faults { lose_replies: 0.2, ..Faults::default() }),
        ("transient errors 5%", Faults { transient: 0.05, ..Faults::default() }),
        ("attribute cache 300 ms", Faults { attr_cache_ms: 300, ..Faults::default() }),
    ];
    let (hosts, procs) = (super::HOSTS, super::PROCS);
    with_worker(rig, |rig| {
        if want("ids") {
            for (name, f) in &modes {
                ids(rig, name, Backend::Faultfs(f.clone()), Shape { hosts, procs, on_server: 0, steps: 40 });
            }
            let server = Shape { hosts, procs, on_server: procs, steps: 40 };
            ids(rig, "clients + processes on the server", Backend::Faultfs(Faults::default()), server);
        }
        if want("locks") {
            for (name, f) in &modes {
                locks(rig, name, Backend::Faultfs(f.clone()), Shape { hosts, procs, on_server: 0, steps: 40 });
            }
            let server = Shape { hosts, procs, on_server: procs, steps: 40 };
            locks(rig, "clients + processes on the server", Backend::Faultfs(Faults::default()), server);
        }
        if want("lease") {
            for (name, f) in &modes {
                lease(rig, name, Backend::Faultfs(f.clone()), 2);
            }
        }
    });
}

/// The real-NFS rows (`want`: nfs.rs's NFSLOCK_NFS_ONLY filter on the title).
pub fn nfs(rig: &mut Rig, want: &dyn Fn(&str) -> bool) {
    let tcp = "TCP, lost replies 15% (every procedure that changes something)";
    let udp = "UDP, lost replies 10% (every procedure that changes something)";
    let wire = |udp: bool| Backend::Nfs(Wire { udp, lost_pct: if udp { 10 } else { 15 }, procs: CHANGING, ..Wire::default() });
    let title = |what: &str, name: &str| format!("real NFS: manager: {what}, {name}");
    let shape = Shape { hosts: 3, procs: 2, on_server: 0, steps: 30 };
    with_worker(rig, |rig| {
        for (name, udp) in [(tcp, false), (udp, true)] {
            if want(&title(IDS, name)) {
                ids(rig, name, wire(udp), shape);
            }
            if want(&title(LOCKS, name)) {
                locks(rig, name, wire(udp), shape);
            }
        }
        // A client that trusts its name cache for 3 s (the lock-file rows' actimeo row).
        let cached = "TCP, actimeo 3 s, lost replies 10%";
        if want(&title(IDS, cached)) {
            let wire = Wire { actimeo_ms: 3000, lost_pct: 10, procs: CHANGING, ..Wire::default() };
            ids(rig, cached, Backend::Nfs(wire), shape);
        }
        if want(&title(LEASE, tcp)) {
            lease(rig, tcp, wire(false), 2);
        }
    });
}

const IDS: &str = "IDs allocated and freed from every host";
const LOCKS: &str = "IDs locked from every host, exact counters";
const LEASE: &str = "lease holder SIGKILLed on host A, taken by B after the lease";

/// A fleet whose manager directory host A has created (with `ids` allocated), opened
/// from every host: a second create is EEXIST, and the manager is unlimited.
fn fleet(rig: &mut Rig, scenario: &str, slug: &str, backends: &[Backend], ids: &str) -> (Fleet, String) {
    let fleet = Fleet::boot(rig, slug, backends);
    let (site, hosts) = (&fleet.site, &fleet.hosts);
    let dir = site.mount.join("mgr");
    let dir_s = dir.to_str().unwrap();
    // A failed create is a failure of the row; it is tried again (up to 5 times in all)
    // so that the rest of the scenario still runs.
    let mut failed = Vec::new();
    for attempt in 1..=5 {
        let made = hosts[0].run(site, &["mcreate", dir_s, ids], SHORT);
        let ok = field(&made, "rc").as_deref() == Some("OK");
        rig.check(scenario, ok, format!("create on {}, attempt {attempt}: {}", hosts[0].name, describe(&made)));
        if !ok {
            failed.push(field(&made, "rc").unwrap_or_default());
        }
        if ok || site.backing.join("mgr").exists() {
            break;
        }
    }
    let created = if failed.is_empty() {
        String::new()
    } else {
        format!("create_dir failed {} times first ({}), nothing left by it; ", failed.len(), failed.join(", "))
    };
    rig.check(scenario, site.backing.join("mgr/nfslock-manager").is_file(), "no header file DIR/nfslock-manager");
    for h in hosts {
        let out = h.run(site, &["mopen", dir_s], SHORT);
        let ok = field(&out, "rc").as_deref() == Some("OK")
            && field(&out, "exist").as_deref() == Some("EEXIST")
            && field(&out, "unlimited").as_deref() == Some("1,1")
            && field(&out, "cap").as_deref() == Some("4294967295")
            && field(&out, "close").as_deref() == Some("OK");
        rig.check(scenario, ok, format!("open on {}: {}", h.name, describe(&out)));
    }
    (fleet, created)
}

/// "FAILED (N checks): " when checks of `scenario` failed, for its row's notes.
fn verdict(rig: &Rig, scenario: &str) -> String {
    let n = rig.failures.iter().filter(|f| f.starts_with(&format!("{scenario}: "))).count();
    if n == 0 {
        String::new()
    } else {
        format!("FAILED ({n} checks): ")
    }
}

/// Workers of `shape` on every host (and on the server's disk), running `args` with
/// the manager directory and the check directory first, then a seed of their own.
fn spawn_workers(fleet: &Fleet, shape: Shape, mode: &str, args: &[String]) -> Vec<std::process::Child> {
    let site = &fleet.site;
    let (dir, server_dir, check) = (site.mount.join("mgr"), site.backing.join("mgr"), site.backing.join("check"));
    let argv = |dir: &Path, seed: usize| -> Vec<String> {
        let mut v = vec![mode.to_string(), dir.to_str().unwrap().to_string(), check.to_str().unwrap().to_string()];
        v.extend(args.iter().cloned());
        v.push(seed.to_string());
        v
    };
    let mut children: Vec<_> = fleet.hosts[..shape.hosts]
        .iter()
        .flat_map(|h| (0..shape.procs).map(move |p| (h, p)))
        .enumerate()
        .map(|(i, (h, _))| {
            let a = argv(&dir, i);
            h.spawn(site, &a.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    for i in 0..shape.on_server {
        let mut cmd = Command::new(&site.worker);
        cmd.args(argv(&server_dir, 1000 + i)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push(cmd.spawn().expect("starts a worker on the server's disk"));
    }
    children
}

/// The faults of a run, and a check that the lossy ones had some.
fn faults_of(rig: &mut Rig, scenario: &str, fleet: &Fleet, backend: &Backend) -> u64 {
    std::thread::sleep(Duration::from_millis(250)); // the clients' stats files (every 100 ms)
    let faults: u64 = fleet.hosts.iter().map(Host::faults_injected).sum();
    let lossy = match backend {
        Backend::Faultfs(f) => f.lose_replies > 0.0 || f.transient > 0.0 || f.attr_cache_ms > 0,
        Backend::Nfs(w) => w.lost_pct > 0 || w.drop_pct > 0,
    };
    if lossy {
        rig.check(scenario, faults > 0, "no fault was injected");
    }
    faults
}

fn client_notes(fleet: &Fleet) -> String {
    if fleet.server.is_some() {
        format!("; {}", fleet.client_notes())
    } else {
        String::new()
    }
}

/// One allocation of an ID by one worker: from allocate's return to the free's call
/// (None: never freed). The ID was surely the worker's over that span.
struct Span {
    id: u64,
    from: f64,
    to: Option<f64>,
    worker: String,
}

/// The spans in the workers' logs (CHECK/log.HOST.PID: `a ID CALL RETURN`, `f ID CALL
/// RETURN`), and the lines that made no sense (a free of an ID the worker did not hold).
fn spans(check: &Path) -> (Vec<Span>, Vec<String>) {
    let (mut spans, mut odd) = (Vec::new(), Vec::new());
    let mut logs: Vec<PathBuf> = fs::read_dir(check)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("log.")))
        .collect();
    logs.sort();
    for log in logs {
        let worker = log.file_name().unwrap().to_string_lossy().trim_start_matches("log.").to_string();
        let mut open: HashMap<u64, usize> = HashMap::new();
        for line in fs::read_to_string(&log).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(kind), Some(id), Some(call), Some(ret)) = (
                f.first(),
                f.get(1).and_then(|x| x.parse::<u64>().ok()),
                f.get(2).and_then(|x| x.parse::<f64>().ok()),
                f.get(3).and_then(|x| x.parse::<f64>().ok()),
            ) else {
                odd.push(format!("{worker}: {line:?}"));
                continue;
            };
            match *kind {
                "a" => {
                    if open.insert(id, spans.len()).is_some() {
                        odd.push(format!("{worker}: allocated {id} again while holding it"));
                    }
                    spans.push(Span { id, from: ret, to: None, worker: worker.clone() });
                }
                "f" => match open.remove(&id) {
                    Some(i) => spans[i].to = Some(call),
                    None => odd.push(format!("{worker}: freed {id}, which it did not hold")),
                },
                _ => odd.push(format!("{worker}: {line:?}")),
            }
        }
    }
    (spans, odd)
}

/// Pairs of spans of one ID that overlap (the later allocation returned before the
/// earlier one's free was called): the ID was allocated to two workers at once.
fn overlaps(spans: &[Span]) -> Vec<String> {
    let mut by_id: BTreeMap<u64, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        by_id.entry(s.id).or_default().push(s);
    }
    let mut found = Vec::new();
    for (id, mut list) in by_id {
        list.sort_by(|a, b| a.from.total_cmp(&b.from));
        // The earlier span reaching furthest, and its end (never freed: forever).
        let mut reach: Option<(&Span, f64)> = None;
        for s in list {
            if let Some((prev, end)) = reach.filter(|(_, end)| s.from < *end) {
                found.push(format!(
                    "ID {id}: {} from {:.1} to {}, {} from {:.1}",
                    prev.worker,
                    prev.from,
                    if end.is_finite() { format!("{end:.1}") } else { "never freed".into() },
                    s.worker,
                    s.from
                ));
            }
            let end = s.to.unwrap_or(f64::INFINITY);
            if reach.is_none_or(|(_, e)| end > e) {
                reach = Some((s, end));
            }
        }
    }
    found
}

/// Lock files, claims and silly-renamed files in `dir` (nfs.rs's `leftovers`), or that
/// `dir` is missing.
fn leftovers(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(d) => d
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".nfs_lock") || n.starts_with(".nfslock-") || n.starts_with(".nfs"))
            .collect(),
        Err(e) => vec![format!("{}: {e}", dir.display())],
    }
}

/// Names in `dir` that look like an allocated ID (decimal).
fn numeric_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    v.sort();
    v
}

/// Scenario (a): IDs allocated and freed at random by every worker at once, each
/// holding up to 4; no ID allocated to two at once; all free at the end.
fn ids(rig: &mut Rig, name: &str, backend: Backend, shape: Shape) {
    let scenario = titled(&backend, format!("manager: {IDS}, {name}"));
    let start = Instant::now();
    let (fleet, created) = fleet(rig, &scenario, &format!("mgr-ids-{}-{name}", scenario.len()), &vec![backend.clone(); shape.hosts], "-");
    let children = spawn_workers(&fleet, shape, "malloc", &[shape.steps.to_string(), "4".into()]);
    let (mut allocs, mut frees, mut dup, mut unlisted, mut err, mut maxid) = (0, 0, 0, 0, 0, 0);
    let mut messages = Vec::new();
    for child in children {
        let out = host::finish(child, WORKER_LIMIT);
        allocs += count(&out, "allocs");
        frees += count(&out, "frees");
        dup += count(&out, "dup");
        unlisted += count(&out, "unlisted");
        err += count(&out, "err");
        maxid = maxid.max(count(&out, "maxid"));
        messages.extend(String::from_utf8_lossy(&out.stderr).lines().map(str::to_string));
        let clean = count(&out, "err") == 0 && count(&out, "dup") == 0 && count(&out, "unlisted") == 0;
        rig.check(&scenario, out.status.success() && clean && field(&out, "allocs").is_some(), describe(&out));
    }
    let check = fleet.site.backing.join("check");
    let (spans, odd) = spans(&check);
    let overlapping = overlaps(&spans);
    let viol = overlapping.len() as u64 + dup;
    rig.check(&scenario, overlapping.is_empty(), format!("IDs allocated twice at once: {}", overlapping.join("; ")));
    rig.check(&scenario, dup == 0, format!("{dup} allocations found another worker's marker"));
    rig.check(&scenario, odd.is_empty(), format!("logs: {}", odd.join("; ")));
    rig.check(
        &scenario,
        spans.len() as u64 == allocs && allocs == frees,
        format!("{} logged, {allocs} allocated, {frees} freed", spans.len()),
    );
    let minimum = (shape.workers() as u64) * u64::from(shape.steps) / 2;
    rig.check(&scenario, allocs >= minimum, format!("only {allocs} allocations (at least {minimum} expected)"));
    let distinct = spans.iter().map(|s| s.id).collect::<std::collections::HashSet<_>>().len();
    // Handed to another worker after a free: the ID was really shared out over time.
    let mut last: HashMap<u64, &str> = HashMap::new();
    let mut sorted: Vec<&Span> = spans.iter().collect();
    sorted.sort_by(|a, b| a.from.total_cmp(&b.from));
    let passed = sorted.iter().filter(|s| last.insert(s.id, &s.worker).is_some_and(|w| w != s.worker)).count();
    rig.check(&scenario, passed > 0, "no ID passed from one worker to another");
    // Every ID free again: none left in DIR/ids, and the lowest free one is 0.
    let left = numeric_names(&fleet.site.backing.join("mgr/ids"));
    rig.check(&scenario, left.is_empty(), format!("IDs still allocated after every worker freed its own: {left:?}"));
    let cross = cross_host_frees(rig, &scenario, &fleet, &backend);
    let last_host = &fleet.hosts[fleet.hosts.len() - 1];
    let fin = last_host.run(&fleet.site, &["mfinal", fleet.site.mount.join("mgr").to_str().unwrap()], SHORT);
    // The lowest free as listed (a client caching listings may still list some).
    let listing_cached = matches!(&backend, Backend::Nfs(w) if w.actimeo_ms > 0);
    let fin_ok = field(&fin, "rc").as_deref() == Some("OK")
        && field(&fin, "n").as_deref() == Some("0")
        && (listing_cached || field(&fin, "id").as_deref() == Some("0"))
        && field(&fin, "free").as_deref() == Some("OK");
    rig.check(&scenario, fin_ok, format!("at the end, on {}: want n=0 id=0, got {}", last_host.name, describe(&fin)));
    let faults = faults_of(rig, &scenario, &fleet, &backend);
    let client = client_notes(&fleet);
    fleet.end();
    messages.sort();
    messages.dedup();
    let verdict = verdict(rig, &scenario);
    rig.rows.push(Row {
        scenario,
        shape: shape.label(),
        acquisitions: allocs,
        faults,
        violations: viol,
        wall: start.elapsed(),
        notes: format!(
            "{}{created}{allocs} allocations of {distinct} distinct IDs (highest {maxid}), {passed} of them handed out after another worker's free, {frees} frees; {} IDs allocated twice at once (logs), {dup} marker collisions, {unlisted} `allocated` lists without an ID held; {err} errors; {cross}; at the end {} IDs left allocated, then the lowest free {}{client}{}",
            verdict,
            overlapping.len(),
            left.len(),
            field(&fin, "id").unwrap_or_default(),
            if messages.is_empty() { String::new() } else { format!("; worker messages: {}", messages.join(" / ")) }
        ),
        ..Row::default()
    });
}

/// IDs allocated on host A and freed on host B moments after B found them free (B's
/// client may remember that): B's frees of the free IDs answer ENOENT, A's allocations
/// are 0..8 (the lowest free, as listed), B's frees of them then all succeed and none is left
/// allocated, and A's allocate_id of each just after B freed it succeeds (A's client
/// saw them allocated).
fn cross_host_frees(rig: &mut Rig, scenario: &str, fleet: &Fleet, backend: &Backend) -> String {
    let (site, a, b) = (&fleet.site, &fleet.hosts[0], &fleet.hosts[1]);
    let dir = site.mount.join("mgr");
    let dir_s = dir.to_str().unwrap();
    let lowest = (0..8).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let each = |rc: &str, n: usize| vec![rc; n].join(",");
    let unallocated = b.run(site, &["mfree", dir_s, &lowest], SHORT);
    let ok1 = field(&unallocated, "rc") == Some(each("ENOENT", 8));
    rig.check(scenario, ok1, format!("{} freeing IDs 0-7, none allocated: want ENOENT each, got {}", b.name, describe(&unallocated)));
    let made = a.run(site, &["mallocn", dir_s, "8"], SHORT);
    let ids = field(&made, "ids").unwrap_or_default();
    let n = ids.split(',').filter(|x| !x.is_empty()).count();
    rig.check(scenario, n == 8 && field(&made, "err").as_deref() == Some("0"), format!("{} allocating 8: {}", a.name, describe(&made)));
    // The lowest free IDs, as listed: a client that caches listings (actimeo) may list
    // IDs freed a moment ago.
    let listing_cached = matches!(&backend, Backend::Nfs(w) if w.actimeo_ms > 0);
    rig.check(scenario, listing_cached || ids == lowest, format!("{} allocating 8: want {lowest}, got {ids}", a.name));
    let freed = b.run(site, &["mfree", dir_s, &ids], SHORT);
    let ok3 = field(&freed, "rc") == Some(each("OK", n));
    rig.check(scenario, ok3, format!("{} freeing A's IDs {ids} just after: want OK each, got {}", b.name, describe(&freed)));
    let left = numeric_names(&site.backing.join("mgr/ids"));
    rig.check(scenario, left.is_empty(), format!("after B freed A's IDs, still allocated: {left:?}"));
    // And back: A takes them by number just after B freed them, then frees them.
    let again = a.run(site, &["mallocid", dir_s, &ids], SHORT);
    let ok4 = field(&again, "rc") == Some(each("OK", n));
    rig.check(scenario, ok4, format!("{} allocate_id of {ids} just after B freed them: want OK each, got {}", a.name, describe(&again)));
    let _ = a.run(site, &["mfree", dir_s, &ids], SHORT);
    let rcs = |out: &std::process::Output| field(out, "rc").unwrap_or_default();
    format!(
        "on B free of unallocated IDs 0-7: {}; A allocated {ids}; B freed them just after: {}; A's allocate_id of them just after: {}",
        rcs(&unallocated),
        rcs(&freed),
        rcs(&again)
    )
}

/// Scenario (b): every worker locks random IDs of 0..4 and increments that ID's counter
/// non-atomically inside: no marker collision, every counter exact.
fn locks(rig: &mut Rig, name: &str, backend: Backend, shape: Shape) {
    let scenario = titled(&backend, format!("manager: {LOCKS}, {name}"));
    let start = Instant::now();
    let (fleet, created) =
        fleet(rig, &scenario, &format!("mgr-locks-{}-{name}", scenario.len()), &vec![backend.clone(); shape.hosts], "0,1");
    let args = [shape.steps.to_string(), COUNTED_IDS.to_string(), "2".into()];
    let children = spawn_workers(&fleet, shape, "mcount", &args);
    let (mut acq, mut viol, mut notheld, mut err) = (0, 0, 0, 0);
    let mut per = [0u64; COUNTED_IDS];
    let mut messages = Vec::new();
    for child in children {
        let out = host::finish(child, WORKER_LIMIT);
        acq += count(&out, "acq");
        viol += count(&out, "viol");
        notheld += count(&out, "notheld");
        err += count(&out, "err");
        let mine: Vec<u64> = field(&out, "per").unwrap_or_default().split(',').filter_map(|x| x.parse().ok()).collect();
        for (total, n) in per.iter_mut().zip(&mine) {
            *total += n;
        }
        messages.extend(String::from_utf8_lossy(&out.stderr).lines().map(str::to_string));
        let clean = count(&out, "err") == 0 && count(&out, "viol") == 0 && count(&out, "notheld") == 0;
        rig.check(&scenario, out.status.success() && clean && mine.len() == COUNTED_IDS, describe(&out));
    }
    let check = fleet.site.backing.join("check");
    let counters: Vec<u64> = (0..COUNTED_IDS)
        .map(|i| fs::read_to_string(check.join(format!("counter.{i}"))).unwrap_or_default().trim().parse().unwrap_or(0))
        .collect();
    let expected = u64::from(shape.steps) * shape.workers() as u64;
    let exact = counters.as_slice() == per.as_slice() && acq == expected;
    rig.check(&scenario, exact, format!("counters {counters:?}, acquisitions per ID {per:?}, {acq} in all, {expected} expected"));
    let wrong = counters.iter().zip(&per).filter(|(c, p)| c != p).count() as u64;
    rig.check(&scenario, viol == 0, format!("{viol} violations (marker collisions, locks lost while held)"));
    let locks_dir = fleet.site.backing.join("mgr/locks");
    let left = leftovers(&locks_dir);
    rig.check(&scenario, left.is_empty(), format!("left in DIR/locks: {left:?}"));
    let markers: Vec<_> = (0..COUNTED_IDS).filter(|i| check.join(format!("inside.{i}")).exists()).collect();
    rig.check(&scenario, markers.is_empty(), format!("markers left: {markers:?}"));
    let faults = faults_of(rig, &scenario, &fleet, &backend);
    let client = client_notes(&fleet);
    fleet.end();
    messages.sort();
    messages.dedup();
    let verdict = verdict(rig, &scenario);
    rig.rows.push(Row {
        scenario,
        shape: shape.label(),
        acquisitions: acq,
        faults,
        violations: viol + wrong,
        wall: start.elapsed(),
        notes: format!(
            "{}{created}IDs 0-3 (0, 1 allocated; 2, 3 never), 2 ms pause inside; counters {} / acquisitions {} ({acq}/{expected}); {notheld} `locks_held` lists without the ID held; {err} errors; {} left in DIR/locks{client}{}",
            verdict,
            counters.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            per.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            if left.is_empty() { "nothing".to_string() } else { format!("{left:?}") },
            if messages.is_empty() { String::new() } else { format!("; worker messages: {}", messages.join(" / ")) }
        ),
        ..Row::default()
    });
}

fn ms(line: &str, key: &str) -> Option<f64> {
    line_field(line, key)?.parse().ok()
}

/// Starts `mhold` on `h` and waits for its `held` line; None (a failed check) if it did
/// not take the lock.
fn holder(rig: &mut Rig, scenario: &str, fleet: &Fleet, h: usize, id: &str, lease: u64, hold: u64) -> Option<host::Lines> {
    let dir = fleet.site.mount.join("mgr");
    let mut holder = fleet.hosts[h].spawn_lines(&fleet.site, &["mhold", dir.to_str().unwrap(), id, &lease.to_string(), &hold.to_string()]);
    let held = holder.next_line(SHORT).unwrap_or_default();
    if held.starts_with("held") {
        return Some(holder);
    }
    let out = holder.finish(SHORT);
    rig.check(scenario, false, format!("{} did not take ID {id}: {held} {}", fleet.hosts[h].name, describe(&out)));
    None
}

/// Waits for a holder's SIGKILL; its last clock reading before it (ms), None if it was
/// not killed holding.
fn killed(rig: &mut Rig, scenario: &str, holder: host::Lines) -> Option<f64> {
    let died = holder.finish(Duration::from_secs(60));
    let last = String::from_utf8_lossy(&died.stdout).lines().last().unwrap_or_default().to_string();
    let by_kill = std::os::unix::process::ExitStatusExt::signal(&died.status) == Some(libc::SIGKILL);
    let at = ms(&last, "mono").filter(|_| by_kill && last.starts_with("alive"));
    rig.check(scenario, at.is_some(), format!("the holder was not SIGKILLed holding: {}", describe(&died)));
    at
}

/// `mtake` on host `h`: (rc, waited, the whole output).
fn take(fleet: &Fleet, h: usize, id: &str, lease: u64, timeout: u64) -> (String, f64, std::process::Output) {
    let (dir, check) = (fleet.site.mount.join("mgr"), fleet.site.backing.join("check"));
    let args = ["mtake", dir.to_str().unwrap(), id, &lease.to_string(), &timeout.to_string(), check.to_str().unwrap(), "100"];
    let out = fleet.hosts[h].run(&fleet.site, &args, Duration::from_secs(60));
    let rc = field(&out, "rc").unwrap_or_default();
    let waited = field(&out, "waited").and_then(|w| w.parse().ok()).unwrap_or(f64::NAN);
    (rc, waited, out)
}

fn took(out: &std::process::Output) -> bool {
    field(out, "rc").as_deref() == Some("OK")
        && field(out, "viol").as_deref() == Some("0")
        && field(out, "unlock").as_deref() == Some("OK")
        && field(out, "close").as_deref() == Some("OK")
}

/// Scenario (c): the manager's locks as leases (set_lease_ms). `trials` times a holder
/// of ID 5 on host A is SIGKILLed holding, and a fresh locker on host B takes it: never
/// before the lease (in the first trial B also times out over two leases while A
/// lives). Then a holder killed on A is replaced at once by another process of A; and
/// without a lease (ID 6) B never takes a dead holder's lock of A's, while A does.
fn lease(rig: &mut Rig, name: &str, backend: Backend, trials: usize) {
    let scenario = titled(&backend, format!("manager: {LEASE}, {name}"));
    let start = Instant::now();
    let (fleet, created) = fleet(rig, &scenario, &format!("mgr-lease-{}-{name}", scenario.len()), &[backend.clone(), backend.clone()], "5");
    let lease = LEASE_MS;
    let (mut viol, mut acq, mut waits) = (0u64, 0u64, Vec::new());
    for trial in 0..trials {
        let alive_phase = trial == 0;
        let hold = if alive_phase { 2 * lease + 700 } else { 200 };
        let Some(a) = holder(rig, &scenario, &fleet, 0, "5", lease, hold) else { break };
        acq += 1;
        if alive_phase {
            let (rc, waited, out) = take(&fleet, 1, "5", lease, 2 * lease);
            if rc == "OK" {
                viol += 1;
            }
            let ok = rc == "ETIMEDOUT" && waited >= 2.0 * lease as f64 - 5.0;
            rig.check(&scenario, ok, format!("B while A lives: want ETIMEDOUT after {} ms, got {}", 2 * lease, describe(&out)));
        }
        let Some(kill) = killed(rig, &scenario, a) else { break };
        rig.check(&scenario, fleet.site.backing.join("mgr/locks/5.nfs_lock").exists(), "the killed holder's lock file is gone");
        let (rc, waited, out) = take(&fleet, 1, "5", lease, 20_000);
        let since_kill = field(&out, "mono").and_then(|m| m.parse::<f64>().ok()).map_or(f64::NAN, |m| m - kill);
        rig.check(&scenario, took(&out), format!("trial {trial}: B after A's death: {}", describe(&out)));
        if rc == "OK" {
            acq += 1;
            waits.push((waited, since_kill));
            viol += count(&out, "viol");
            if waited < lease as f64 || since_kill < lease as f64 {
                viol += 1;
                rig.check(&scenario, false, format!("trial {trial}: B took it {waited:.0} ms into its wait, {since_kill:.0} ms after the kill: before the {lease} ms lease"));
            }
            rig.check(&scenario, waited < lease as f64 + 5000.0, format!("trial {trial}: B waited {waited:.0} ms for a {lease} ms lease"));
        }
    }
    // A dead holder of the taker's own host: cleared at once, lease or not.
    let mut same_host = f64::NAN;
    if let Some(a) = holder(rig, &scenario, &fleet, 0, "5", lease, 100) {
        acq += 1;
        if killed(rig, &scenario, a).is_some() {
            let (rc, waited, out) = take(&fleet, 0, "5", lease, 20_000);
            acq += u64::from(rc == "OK");
            same_host = waited;
            rig.check(
                &scenario,
                took(&out) && waited < lease as f64 / 2.0,
                format!("A after A's own holder died: want it at once, got {}", describe(&out)),
            );
        }
    }
    // No lease: B never breaks A's dead holder; A clears it at once.
    let mut plain = String::new();
    if let Some(a) = holder(rig, &scenario, &fleet, 0, "6", 0, 100) {
        acq += 1;
        if killed(rig, &scenario, a).is_some() {
            let (rc, waited, out) = take(&fleet, 1, "6", 0, 1500);
            if rc == "OK" {
                viol += 1;
            }
            rig.check(&scenario, rc == "ETIMEDOUT", format!("B, no lease, A's holder dead: want ETIMEDOUT, got {}", describe(&out)));
            let (rc2, waited2, out2) = take(&fleet, 0, "6", 0, 20_000);
            acq += u64::from(rc2 == "OK");
            rig.check(&scenario, took(&out2) && waited2 < lease as f64 / 2.0, format!("A, no lease, its holder dead: {}", describe(&out2)));
            plain = format!("without a lease B timed out after {waited:.0} ms, A took it in {waited2:.0} ms");
        }
    }
    rig.check(&scenario, waits.len() == trials, format!("{} of {trials} takeovers measured", waits.len()));
    let left: Vec<String> = fs::read_dir(fleet.site.backing.join("mgr/locks"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nfs_lock") || n.contains(".x"))
        .collect();
    rig.check(&scenario, left.is_empty(), format!("left in DIR/locks: {left:?}"));
    let faults = faults_of(rig, &scenario, &fleet, &backend);
    let client = client_notes(&fleet);
    fleet.end();
    let (w, s): (Vec<f64>, Vec<f64>) = waits.iter().copied().unzip();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}-{hi:.0} ms")
    };
    let verdict = verdict(rig, &scenario);
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: acq,
        faults,
        violations: viol,
        recoveries: waits.len() as u64 + u64::from(same_host.is_finite()),
        wall: start.elapsed(),
        notes: format!(
            "{}{created}lease {lease} ms, {} holders SIGKILLed holding: B timed out over 2 leases while A lived, then took it {} into its own wait ({} after the kill); A's own next process took it in {same_host:.0} ms; {plain}{client}",
            verdict,
            waits.len(),
            range(&w),
            range(&s)
        ),
        ..Row::default()
    });
}
