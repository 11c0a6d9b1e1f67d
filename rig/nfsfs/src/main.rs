//! nfslock-nfsfs: a FUSE filesystem that is an NFSv3 client, one mount per simulated
//! host of libnfslock's rig, talking to a real NFS server over TCP or UDP.
//!
//! Threads: the FUSE session loop (one request at a time: one RPC in flight per
//! mount), the stats writer, and a signal thread that unmounts on SIGTERM/SIGINT/SIGHUP.

mod client;
mod fs;
mod rpc;
mod stats;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fuser::{MountOption, Session, SessionACL};

use crate::rpc::Proto;
use crate::stats::{write_atomically, Stats};

const USAGE: &str = "usage: nfslock-nfsfs [OPTIONS] SERVER:EXPORT MOUNTPOINT

An NFSv3 client as a FUSE filesystem (run as root).

  --proto=tcp|udp       transport (default tcp)
  --actimeo-ms=N        attribute and name cache lifetime, 0 for none (default 0)
  --timeo-ms=N          first retransmission timeout, doubling up to 10 s (default 1000)
  --retrans=N           soft mount: ETIMEDOUT after N retransmissions (default 0: hard,
                        retransmit forever, as Linux's default `hard`)
  --nfs-port=N          skip the portmapper for NFS
  --mount-port=N        skip the portmapper for MOUNT
  --hostname=NAME       machine name in AUTH_UNIX credentials (default: uname)
  --stats=FILE          write counters there every 100 ms and at exit
  --ready-file=FILE     written once mounted, removed at exit
  --rpc-log=FILE        append a line per RPC send, reply (with its NFS status),
                        timeout and lost connection, with the XID
  --help
";

struct Config {
    server: IpAddr,
    export: String,
    mountpoint: PathBuf,
    proto: Proto,
    actimeo: Duration,
    timeo: Duration,
    retrans: u32,
    nfs_port: Option<u16>,
    mount_port: Option<u16>,
    hostname: Option<String>,
    stats: Option<PathBuf>,
    ready: Option<PathBuf>,
    rpc_log: Option<PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut pos = Vec::new();
    let mut c = Config {
        server: IpAddr::from([127, 0, 0, 1]),
        export: String::new(),
        mountpoint: PathBuf::new(),
        proto: Proto::Tcp,
        actimeo: Duration::ZERO,
        timeo: Duration::from_millis(1000),
        retrans: 0,
        nfs_port: None,
        mount_port: None,
        hostname: None,
        stats: None,
        ready: None,
        rpc_log: None,
    };
    let num = |k: &str, v: &str| v.parse::<u64>().map_err(|_| format!("{k}: not a number: {v}"));
    for a in args {
        if a == "--help" || a == "-h" {
            return Err(String::new());
        }
        let Some(opt) = a.strip_prefix("--") else {
            pos.push(a);
            continue;
        };
        let (k, v) = opt.split_once('=').ok_or_else(|| format!("--{opt} needs =VALUE"))?;
        match k {
            "proto" => {
                c.proto = match v {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    _ => return Err(format!("--proto: tcp or udp, not {v}")),
                }
            }
            "actimeo-ms" => c.actimeo = Duration::from_millis(num(k, v)?),
            "timeo-ms" => c.timeo = Duration::from_millis(num(k, v)?.max(1)),
            "retrans" => c.retrans = num(k, v)? as u32,
            "nfs-port" => c.nfs_port = Some(num(k, v)? as u16),
            "mount-port" => c.mount_port = Some(num(k, v)? as u16),
            "hostname" => c.hostname = Some(v.into()),
            "stats" => c.stats = Some(v.into()),
            "ready-file" => c.ready = Some(v.into()),
            "rpc-log" => c.rpc_log = Some(v.into()),
            _ => return Err(format!("unknown option --{k}")),
        }
    }
    let [target, mountpoint] = <[String; 2]>::try_from(pos).map_err(|_| "want SERVER:EXPORT MOUNTPOINT".to_string())?;
    let (server, export) = target.split_once(':').ok_or("want SERVER:EXPORT")?;
    c.server = server.parse().map_err(|_| format!("server must be an IP address: {server}"))?;
    c.export = export.into();
    c.mountpoint = mountpoint.into();
    Ok(c)
}

fn uname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn main() {
    let config = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(m) if m.is_empty() => {
            print!("{USAGE}");
            exit(0);
        }
        Err(m) => {
            eprintln!("nfslock-nfsfs: {m}\n\n{USAGE}");
            exit(2);
        }
    };
    if let Err(m) = run(config) {
        eprintln!("nfslock-nfsfs: {m}");
        exit(1);
    }
}

fn run(c: Config) -> Result<(), String> {
    // Block the termination signals before any thread exists, so only the
    // signal thread receives them.
    // SAFETY: plain sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // The caller's umask is applied by the kernel/FUSE; ours must not add to it.
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(0) };
    if let Some(r) = &c.ready {
        let _ = std::fs::remove_file(r);
    }
    let stats = Arc::new(Stats::default());
    if let Some(p) = &c.rpc_log {
        rpc::open_rpc_log(p).map_err(|e| format!("--rpc-log {}: {e}", p.display()))?;
    }
    let machine = c.hostname.clone().unwrap_or_else(uname);
    let client = client::Client::mount(c.server, &c.export, c.proto, c.nfs_port, c.mount_port, c.timeo, c.retrans, machine, stats.clone())?;
    let filesystem = fs::NfsFs::new(client, c.actimeo, stats.clone());
    let mut fc = fuser::Config::default();
    fc.mount_options = vec![
        MountOption::FSName(format!("{}:{}", c.server, c.export)),
        MountOption::Subtype("nfslock-nfsfs".into()),
        MountOption::DefaultPermissions,
    ];
    fc.acl = SessionACL::All;
    fc.n_threads = Some(1);
    let mut session = Session::new(filesystem, &c.mountpoint, &fc).map_err(|e| format!("mounting on {}: {e}", c.mountpoint.display()))?;

    let started = Instant::now();
    let header = {
        let c_proto = if c.proto == Proto::Tcp { "tcp" } else { "udp" };
        let actimeo = c.actimeo.as_millis();
        move || {
            vec![
                ("pid", std::process::id().to_string()),
                ("proto", c_proto.to_string()),
                ("actimeo_ms", actimeo.to_string()),
                ("uptime_ms", started.elapsed().as_millis().to_string()),
            ]
        }
    };
    let write_stats = {
        let stats = stats.clone();
        let path = c.stats.clone();
        move || {
            if let Some(p) = &path {
                let _ = write_atomically(p, &stats.render(&header()));
            }
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let write_stats = write_stats.clone();
        thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    write_stats();
                    thread::sleep(Duration::from_millis(100));
                }
            })
            .map_err(|e| e.to_string())?;
    }
    {
        let mut unmounter = session.unmount_callable();
        let mountpoint = c.mountpoint.clone();
        let stop = stop.clone();
        let write_stats = write_stats.clone();
        let ready = c.ready.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut sig = 0;
                // SAFETY: waits on the set blocked above.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                if unmounter.unmount().is_err() {
                    let p = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).unwrap_or_default();
                    // SAFETY: detaching our own mount point.
                    unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                write_stats();
                if let Some(r) = ready {
                    let _ = std::fs::remove_file(r);
                }
                exit(0);
            })
            .map_err(|e| e.to_string())?;
    }
    if let Some(r) = &c.ready {
        write_atomically(r, &format!("pid={}\nmountpoint={}\n", std::process::id(), c.mountpoint.display()))
            .map_err(|e| format!("writing {}: {e}", r.display()))?;
    }
    let result = session.run();
    stop.store(true, Ordering::Relaxed);
    write_stats();
    if let Some(r) = &c.ready {
        let _ = std::fs::remove_file(r);
    }
    result.map_err(|e| format!("session: {e}"))
}
