//! Session scenarios: ID allocation from every host at once, and a crashed host's ID
//! locks reclaimed by another host after the heartbeat timeout, on that host's own
//! clock (its clock skewed on purpose, on faultfs). Each runs on either backend
//! (host.rs): faultfs, or a real NFS server (nfs.rs).

use std::collections::HashSet;
use std::time::Instant;

use super::host::{self, count, field, Backend, Host};
use super::nfs::Fleet;
use super::{describe, Rig, Row, HOSTS, PROCS, SHORT, WORKER_LIMIT};

/// Scenario names say the backend: the real server's rows begin with "real NFS".
pub(super) fn titled(backend: &Backend, what: String) -> String {
    match backend {
        Backend::Faultfs(_) => what,
        Backend::Nfs(_) => format!("real NFS: {what}"),
    }
}

/// IDs each worker asks for, one call each.
const IDS_PER_WORKER: usize = 25;
/// The heartbeat timeout of the takeover scenario.
const TIMEOUT_MS: u64 = 1000;

/// 3 hosts x 4 processes allocating IDs in one repository under `faults`, and
/// `on_server` processes more working on the backing directory itself (a program on the
/// NFS server using its own disk: the library sees a local filesystem there and takes
/// the counter's token without the writer lock, unless a client holds it): every ID is
/// unique, each session's IDs increase, no call fails.
pub fn allocation(rig: &mut Rig, name: &str, backend: Backend, on_server: usize) {
    let scenario = titled(&backend, format!("session IDs, {name}"));
    let start = Instant::now();
    let fleet = Fleet::boot(rig, &format!("ids-{name}"), &vec![backend; HOSTS]);
    let (site, hosts) = (&fleet.site, &fleet.hosts);
    let repo = site.mount.join("repo");
    let (repo_s, n) = (repo.to_str().unwrap(), IDS_PER_WORKER.to_string());
    let server_repo = site.backing.join("repo");
    let mut children: Vec<_> = hosts.iter().flat_map(|h| (0..PROCS).map(move |_| h)).map(|h| h.spawn(site, &["ids", repo_s, &n])).collect();
    for _ in 0..on_server {
        let mut cmd = std::process::Command::new(&site.worker);
        cmd.args(["ids", server_repo.to_str().unwrap(), &n]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        children.push(cmd.spawn().expect("starts a worker on the server's disk"));
    }
    let workers = HOSTS * PROCS + on_server;
    let (mut all, mut viol, mut issued) = (HashSet::new(), 0u64, 0u64);
    for child in children {
        let out = host::finish(child, WORKER_LIMIT);
        let ids: Vec<u64> = field(&out, "ids").unwrap_or_default().split(',').filter_map(|x| x.parse().ok()).collect();
        let ordered = ids.windows(2).all(|w| w[0] < w[1]);
        issued += ids.len() as u64;
        viol += ids.iter().filter(|id| !all.insert(**id)).count() as u64 + u64::from(!ordered);
        let ok = out.status.success() && count(&out, "err") == 0 && ids.len() == IDS_PER_WORKER;
        rig.check(&scenario, ok && ordered, describe(&out));
    }
    rig.check(&scenario, viol == 0, format!("{viol} IDs issued twice or out of order"));
    let leftovers = std::fs::read_dir(site.backing.join("repo/rig.ids")).map(|d| d.count()).unwrap_or(usize::MAX);
    rig.check(&scenario, leftovers == 0, format!("{leftovers} ID locks or claims left after every session closed"));
    let faults = hosts.iter().map(Host::faults_injected).sum();
    let client = if fleet.server.is_some() { format!("; {}", fleet.client_notes()) } else { String::new() };
    fleet.end();
    rig.rows.push(Row {
        scenario,
        acquisitions: issued,
        faults,
        violations: viol,
        wall: start.elapsed(),
        shape: format!("{HOSTS}x{PROCS}{}", if on_server > 0 { format!(" + {on_server} on the server") } else { String::new() }),
        notes: format!("{} distinct IDs, {} expected{client}", all.len(), workers * IDS_PER_WORKER),
        ..Row::default()
    });
}

/// Host A's session holds IDs 7, 8, 9 and A crashes: host B (on faultfs, its clock 7 s
/// ahead) cannot take them while A beats, and takes them a timeout after A went
/// silent.
pub fn takeover(rig: &mut Rig, a: Backend, b: Backend) {
    let skew = match &b {
        Backend::Faultfs(f) if f.clock_offset_ms != 0 => format!(", B's clock {:+} s", f.clock_offset_ms / 1000),
        _ => String::new(),
    };
    let scenario = titled(&a, "session of crashed host A reclaimed by B".to_string());
    let start = Instant::now();
    let mut fleet = Fleet::boot(rig, &titled(&a, "session-takeover".into()), &[a, b]);
    let (site, hosts) = (&fleet.site, &mut fleet.hosts);
    let repo = site.mount.join("repo");
    let (repo_s, timeout) = (repo.to_str().unwrap(), TIMEOUT_MS.to_string());
    let mut holder = hosts[0].spawn(site, &["holdids", repo_s, &timeout, "7,8,9"]);
    let mut line = [0u8; 64];
    let n = std::io::Read::read(holder.stdout.as_mut().unwrap(), &mut line).unwrap_or(0);
    let held = String::from_utf8_lossy(&line[..n]).to_string();
    rig.check(&scenario, held.starts_with("held=3"), format!("A: {held}"));
    // Longer than the timeout: a live session keeps its IDs however long B watches.
    let wait = (3 * TIMEOUT_MS).to_string();
    let early = hosts[1].run(site, &["lockids", repo_s, &timeout, "7,8,9", &wait], SHORT);
    rig.check(&scenario, field(&early, "locked").as_deref() == Some("0"), format!("B while A lives: {}", describe(&early)));
    hosts[0].reboot(site);
    let _ = holder.wait();
    let late = hosts[1].run(site, &["lockids", repo_s, &timeout, "7,8,9", "10000"], SHORT);
    let ms: u64 = count(&late, "ms");
    rig.check(&scenario, field(&late, "locked").as_deref() == Some("3"), format!("B after A crashed: {}", describe(&late)));
    // B's observer must have watched A's silent record for a full timeout.
    rig.check(&scenario, ms + 50 >= TIMEOUT_MS, format!("B took them after {ms} ms, before the {TIMEOUT_MS} ms timeout"));
    fleet.end();
    rig.rows.push(Row {
        scenario,
        shape: "2x1".into(),
        acquisitions: 3,
        recoveries: 1,
        wall: start.elapsed(),
        notes: format!("B waited {ms} ms (timeout {TIMEOUT_MS} ms{skew}); none taken while A lived"),
        ..Row::default()
    });
}
