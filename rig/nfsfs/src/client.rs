//! NFSv3 procedures on top of the RPC transport: portmap and MOUNT to get the root
//! file handle, then one function per procedure the filesystem uses. Results come
//! back as the NFS result or an errno, mapped as Linux's client maps them
//! (nfs3_stat_to_errno): NFS3ERR_STALE and NFS3ERR_BADHANDLE are ESTALE, and so on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nfs3_types::mount::{self, dirpath, mountres3};
use nfs3_types::nfs3::*;
use nfs3_types::portmap;
use nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

use crate::rpc::{decode, log, Proto, Rpc, RpcError};
use crate::stats::Stats;

/// How long to wait before sending a call again that the server answered with
/// NFS3ERR_JUKEBOX (Linux: NFS_JUKEBOX_RETRY_TIME, 5 s; shorter here).
const JUKEBOX_DELAY: Duration = Duration::from_millis(500);

pub type Res<T> = Result<T, i32>;

/// Who a call is made for: AUTH_UNIX with the caller's ids, as the kernel sends.
#[derive(Clone, Copy)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
}

pub struct Client {
    rpc: Mutex<Rpc>,
    machine: String,
    pub root: nfs_fh3,
    stats: Arc<Stats>,
}

pub fn errno_of(stat: nfsstat3) -> i32 {
    use nfsstat3::*;
    match stat {
        NFS3_OK => 0,
        NFS3ERR_PERM => libc::EPERM,
        NFS3ERR_NOENT => libc::ENOENT,
        NFS3ERR_IO => libc::EIO,
        NFS3ERR_NXIO => libc::ENXIO,
        NFS3ERR_ACCES => libc::EACCES,
        NFS3ERR_EXIST => libc::EEXIST,
        NFS3ERR_XDEV => libc::EXDEV,
        NFS3ERR_NODEV => libc::ENODEV,
        NFS3ERR_NOTDIR => libc::ENOTDIR,
        NFS3ERR_ISDIR => libc::EISDIR,
        NFS3ERR_INVAL => libc::EINVAL,
        NFS3ERR_FBIG => libc::EFBIG,
        NFS3ERR_NOSPC => libc::ENOSPC,
        NFS3ERR_ROFS => libc::EROFS,
        NFS3ERR_MLINK => libc::EMLINK,
        NFS3ERR_NAMETOOLONG => libc::ENAMETOOLONG,
        NFS3ERR_NOTEMPTY => libc::ENOTEMPTY,
        NFS3ERR_DQUOT => libc::EDQUOT,
        NFS3ERR_STALE | NFS3ERR_BADHANDLE => libc::ESTALE,
        NFS3ERR_REMOTE => libc::EREMOTE,
        NFS3ERR_NOTSUPP => libc::EOPNOTSUPP,
        NFS3ERR_SERVERFAULT => libc::EREMOTEIO,
        NFS3ERR_NOT_SYNC | NFS3ERR_BAD_COOKIE | NFS3ERR_TOOSMALL | NFS3ERR_BADTYPE | NFS3ERR_JUKEBOX => libc::EIO,
    }
}

fn rpc_errno(e: RpcError) -> i32 {
    log(&format!("rpc: {e}"));
    e.errno()
}

/// One-shot RPC over TCP for the portmapper and MOUNT (hard, short timer).
fn oneshot<A: Pack, R: Unpack>(addr: SocketAddr, prog: u32, vers: u32, proc: u32, args: &A, stats: &Arc<Stats>) -> Result<R, String> {
    let mut rpc = Rpc::new(addr, Proto::Tcp, Duration::from_secs(1), 5, stats.clone());
    let cred = opaque_auth::auth_unix(&auth_unix::default());
    let bytes = rpc.call(prog, vers, proc, &cred, args, "").map_err(|e| format!("{addr} program {prog}: {e}"))?;
    decode(&bytes).map_err(|e| format!("{addr} program {prog}: {e}"))
}

fn getport(server: std::net::IpAddr, prog: u32, vers: u32, proto: Proto, stats: &Arc<Stats>) -> Result<u16, String> {
    let prot = if proto == Proto::Tcp { portmap::IPPROTO_TCP } else { portmap::IPPROTO_UDP };
    let args = portmap::mapping { prog, vers, prot, port: 0 };
    let port: u32 = oneshot((server, portmap::PMAP_PORT).into(), portmap::PROGRAM, portmap::VERSION, 3, &args, stats)?;
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("program {prog} version {vers} is not registered with the portmapper on {server}")),
    }
}

impl Client {
    /// Finds the ports through the portmapper (unless given), mounts `export` and
    /// keeps its root handle.
    #[allow(clippy::too_many_arguments)]
    pub fn mount(
        server: std::net::IpAddr,
        export: &str,
        proto: Proto,
        nfs_port: Option<u16>,
        mount_port: Option<u16>,
        timeo: Duration,
        retrans: u32,
        machine: String,
        stats: Arc<Stats>,
    ) -> Result<Client, String> {
        let mport = match mount_port {
            Some(p) => p,
            None => getport(server, mount::PROGRAM, mount::VERSION, Proto::Tcp, &stats)?,
        };
        let path = dirpath(Opaque::borrowed(export.as_bytes()));
        let res: mountres3 = oneshot((server, mport).into(), mount::PROGRAM, mount::VERSION, 1, &path, &stats)?;
        let root = match res {
            mountres3::Ok(ok) => nfs_fh3 { data: Opaque::owned(ok.fhandle.0.to_vec()) },
            mountres3::Err(stat) => return Err(format!("mounting {server}:{export}: {stat}")),
        };
        let nport = match nfs_port {
            Some(p) => p,
            None => getport(server, PROGRAM, VERSION, proto, &stats)?,
        };
        let rpc = Rpc::new((server, nport).into(), proto, timeo, retrans, stats.clone());
        Ok(Client { rpc: Mutex::new(rpc), machine, root, stats })
    }

    fn cred(&self, who: Who) -> opaque_auth<'static> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as u32;
        opaque_auth::auth_unix(&auth_unix {
            stamp,
            machinename: Opaque::owned(self.machine.as_bytes().to_vec()),
            uid: who.uid,
            gid: who.gid,
            gids: vec![who.gid],
        })
    }

    /// One procedure; NFS3ERR_JUKEBOX is waited out and the call sent again (as a
    /// new call, as Linux does).
    fn call<A: Pack, T: Unpack, E: Unpack>(&self, proc: u32, name: &str, who: Who, args: &A) -> Res<Nfs3Result<T, E>> {
        self.call_on(proc, name, who, args, &[])
    }

    /// `call`, naming `names` (the directory entries it is about) in the RPC log.
    fn call_on<A: Pack, T: Unpack, E: Unpack>(&self, proc: u32, name: &str, who: Who, args: &A, names: &[&[u8]]) -> Res<Nfs3Result<T, E>> {
        let what: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
        let what = format!("{name} {}", what.join(" "));
        let cred = self.cred(who);
        loop {
            self.stats.bump(&format!("call_{name}"));
            let bytes = self.rpc.lock().unwrap().call(PROGRAM, VERSION, proc, &cred, args, &what).map_err(rpc_errno)?;
            let res: Nfs3Result<T, E> = decode(&bytes).map_err(rpc_errno)?;
            match &res {
                Nfs3Result::Err((nfsstat3::NFS3ERR_JUKEBOX, _)) => {
                    self.stats.bump("nfs3err_jukebox");
                    std::thread::sleep(JUKEBOX_DELAY);
                }
                Nfs3Result::Err((stat, _)) => {
                    self.stats.bump(&format!("err_{name}_{stat}"));
                    return Ok(res);
                }
                Nfs3Result::Ok(_) => return Ok(res),
            }
        }
    }

    pub fn getattr(&self, who: Who, fh: &nfs_fh3) -> Res<fattr3> {
        match self.call::<_, GETATTR3resok, nfs3_types::xdr_codec::Void>(1, "getattr", who, &GETATTR3args { object: fh.clone() })? {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn setattr(&self, who: Who, fh: &nfs_fh3, attrs: sattr3) -> Res<Option<fattr3>> {
        let args = SETATTR3args { object: fh.clone(), new_attributes: attrs, guard: Nfs3Option::None };
        match self.call::<_, SETATTR3resok, SETATTR3resfail>(2, "setattr", who, &args)? {
            Nfs3Result::Ok(ok) => Ok(post(ok.obj_wcc.after)),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn lookup(&self, who: Who, dir: &nfs_fh3, name: &[u8]) -> Res<(nfs_fh3, Option<fattr3>)> {
        let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: name.into() } };
        match self.call_on::<_, LOOKUP3resok, LOOKUP3resfail>(3, "lookup", who, &args, &[name])? {
            Nfs3Result::Ok(ok) => Ok((ok.object, post(ok.obj_attributes))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn readlink(&self, who: Who, fh: &nfs_fh3) -> Res<Vec<u8>> {
        match self.call::<_, READLINK3resok, READLINK3resfail>(5, "readlink", who, &READLINK3args { symlink: fh.clone() })? {
            Nfs3Result::Ok(ok) => Ok(ok.data.0.to_vec()),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn read(&self, who: Who, fh: &nfs_fh3, offset: u64, count: u32) -> Res<(Vec<u8>, bool, Option<fattr3>)> {
        let args = READ3args { file: fh.clone(), offset, count };
        match self.call::<_, READ3resok<'static>, READ3resfail>(6, "read", who, &args)? {
            Nfs3Result::Ok(ok) => Ok((ok.data.to_vec(), ok.eof, post(ok.file_attributes))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn write(
        &self,
        who: Who,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> Res<(u32, stable_how, writeverf3, Option<fattr3>)> {
        let args = WRITE3args { file: fh.clone(), offset, count: data.len() as u32, stable, data: Opaque::borrowed(data) };
        match self.call::<_, WRITE3resok, WRITE3resfail>(7, "write", who, &args)? {
            Nfs3Result::Ok(ok) => Ok((ok.count, ok.committed, ok.verf, post(ok.file_wcc.after))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn create(&self, who: Who, dir: &nfs_fh3, name: &[u8], how: createhow3) -> Res<(Option<nfs_fh3>, Option<fattr3>)> {
        let args = CREATE3args { where_: diropargs3 { dir: dir.clone(), name: name.into() }, how };
        match self.call_on::<_, CREATE3resok, CREATE3resfail>(8, "create", who, &args, &[name])? {
            Nfs3Result::Ok(ok) => Ok((post_fh(ok.obj), post(ok.obj_attributes))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn mkdir(&self, who: Who, dir: &nfs_fh3, name: &[u8], attrs: sattr3) -> Res<(Option<nfs_fh3>, Option<fattr3>)> {
        let args = MKDIR3args { where_: diropargs3 { dir: dir.clone(), name: name.into() }, attributes: attrs };
        match self.call::<_, MKDIR3resok, MKDIR3resfail>(9, "mkdir", who, &args)? {
            Nfs3Result::Ok(ok) => Ok((post_fh(ok.obj), post(ok.obj_attributes))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn symlink(&self, who: Who, dir: &nfs_fh3, name: &[u8], target: &[u8], attrs: sattr3) -> Res<(Option<nfs_fh3>, Option<fattr3>)> {
        let args = SYMLINK3args {
            where_: diropargs3 { dir: dir.clone(), name: name.into() },
            symlink: symlinkdata3 { symlink_attributes: attrs, symlink_data: target.into() },
        };
        match self.call::<_, SYMLINK3resok, SYMLINK3resfail>(10, "symlink", who, &args)? {
            Nfs3Result::Ok(ok) => Ok((post_fh(ok.obj), post(ok.obj_attributes))),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn remove(&self, who: Who, dir: &nfs_fh3, name: &[u8]) -> Res<()> {
        let args = REMOVE3args { object: diropargs3 { dir: dir.clone(), name: name.into() } };
        match self.call_on::<_, REMOVE3resok, REMOVE3resfail>(12, "remove", who, &args, &[name])? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn rmdir(&self, who: Who, dir: &nfs_fh3, name: &[u8]) -> Res<()> {
        let args = RMDIR3args { object: diropargs3 { dir: dir.clone(), name: name.into() } };
        match self.call::<_, RMDIR3resok, RMDIR3resfail>(13, "rmdir", who, &args)? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn rename(&self, who: Who, from: &nfs_fh3, fname: &[u8], to: &nfs_fh3, tname: &[u8]) -> Res<()> {
        let args = RENAME3args {
            from: diropargs3 { dir: from.clone(), name: fname.into() },
            to: diropargs3 { dir: to.clone(), name: tname.into() },
        };
        match self.call_on::<_, RENAME3resok, RENAME3resfail>(14, "rename", who, &args, &[fname, tname])? {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn link(&self, who: Who, file: &nfs_fh3, dir: &nfs_fh3, name: &[u8]) -> Res<Option<fattr3>> {
        let args = LINK3args { file: file.clone(), link: diropargs3 { dir: dir.clone(), name: name.into() } };
        match self.call_on::<_, LINK3resok, LINK3resfail>(15, "link", who, &args, &[name])? {
            Nfs3Result::Ok(ok) => Ok(post(ok.file_attributes)),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    /// Every entry of a directory (READDIR, cookie after cookie): (fileid, name).
    pub fn readdir(&self, who: Who, dir: &nfs_fh3) -> Res<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let (mut cookie, mut verf) = (0u64, cookieverf3::default());
        loop {
            let args = READDIR3args { dir: dir.clone(), cookie, cookieverf: verf, count: 32768 };
            match self.call::<_, READDIR3resok<'static>, READDIR3resfail>(16, "readdir", who, &args)? {
                Nfs3Result::Ok(ok) => {
                    verf = ok.cookieverf;
                    let entries = ok.reply.entries.into_inner();
                    let last = entries.last().map(|e| e.cookie);
                    for e in entries {
                        out.push((e.fileid, e.name.0.to_vec()));
                    }
                    match (ok.reply.eof, last) {
                        (true, _) | (false, None) => return Ok(out),
                        (false, Some(c)) => cookie = c,
                    }
                }
                Nfs3Result::Err((s, _)) => return Err(errno_of(s)),
            }
        }
    }

    pub fn fsstat(&self, who: Who) -> Res<FSSTAT3resok> {
        match self.call::<_, FSSTAT3resok, FSSTAT3resfail>(18, "fsstat", who, &FSSTAT3args { fsroot: self.root.clone() })? {
            Nfs3Result::Ok(ok) => Ok(ok),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }

    pub fn commit(&self, who: Who, fh: &nfs_fh3) -> Res<writeverf3> {
        match self.call::<_, COMMIT3resok, COMMIT3resfail>(21, "commit", who, &COMMIT3args { file: fh.clone(), offset: 0, count: 0 })? {
            Nfs3Result::Ok(ok) => Ok(ok.verf),
            Nfs3Result::Err((s, _)) => Err(errno_of(s)),
        }
    }
}

fn post(a: post_op_attr) -> Option<fattr3> {
    match a {
        Nfs3Option::Some(a) => Some(a),
        Nfs3Option::None => None,
    }
}

fn post_fh(f: post_op_fh3) -> Option<nfs_fh3> {
    match f {
        Nfs3Option::Some(f) => Some(f),
        Nfs3Option::None => None,
    }
}
