//! ONC RPC (RFC 5531) client over TCP (record marking) or UDP, with the kernel
//! client's retransmission rules: a call keeps its XID for its whole life; after a
//! timeout (doubling from `timeo` up to `TIMEO_MAX`) or a broken connection the very
//! same bytes are sent again, on a new connection for TCP, bound to the previous
//! source port when it can be had, so the server's duplicate request cache can
//! recognise the retransmission. Hard by default (retries forever, as `hard`);
//! `retrans > 0` makes it soft (ETIMEDOUT after that many retransmissions).

use std::io::{self, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use nfs3_types::rpc::{accept_stat_data, call_body, msg_body, opaque_auth, reply_body, rpc_msg, RPC_VERSION_2};
use nfs3_types::xdr_codec::{Pack, Unpack};

use crate::stats::Stats;

/// The longest a retransmission timer grows to.
const TIMEO_MAX: Duration = Duration::from_secs(10);
/// Largest reply record accepted (a READ of 1 MiB plus headers).
const MAX_RECORD: usize = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug)]
pub enum RpcError {
    /// Soft mount: no reply after the allowed retransmissions.
    TimedOut,
    /// The server answered, but not with a result (denied, PROG_UNAVAIL, garbage...).
    Rejected(String),
    /// The reply did not parse.
    Garbage(String),
}

impl RpcError {
    pub fn errno(&self) -> i32 {
        match self {
            RpcError::TimedOut => libc::ETIMEDOUT,
            RpcError::Rejected(_) => libc::EACCES,
            RpcError::Garbage(_) => libc::EIO,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::TimedOut => write!(f, "timed out"),
            RpcError::Rejected(s) => write!(f, "rejected: {s}"),
            RpcError::Garbage(s) => write!(f, "bad reply: {s}"),
        }
    }
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

pub struct Rpc {
    server: SocketAddr,
    proto: Proto,
    conn: Option<Conn>,
    /// The source port of the last connection, reused on reconnect.
    local_port: Option<u16>,
    next_xid: u32,
    timeo: Duration,
    retrans: u32,
    stats: std::sync::Arc<Stats>,
}

impl Rpc {
    pub fn new(server: SocketAddr, proto: Proto, timeo: Duration, retrans: u32, stats: std::sync::Arc<Stats>) -> Rpc {
        // Different mounts (and restarts of one) must not share XIDs: the server's
        // duplicate request cache would take a new call for a retransmission.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let xid = (seed.as_nanos() as u32) ^ (std::process::id() << 16);
        Rpc { server, proto, conn: None, local_port: None, next_xid: xid, timeo, retrans, stats }
    }

    fn connect(&mut self) -> io::Result<()> {
        if self.conn.is_some() {
            return Ok(());
        }
        let domain = socket2::Domain::for_address(self.server);
        let conn = match self.proto {
            Proto::Tcp => {
                let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
                sock.set_reuse_address(true)?;
                sock.set_nodelay(true)?;
                if let Some(port) = self.local_port {
                    let any: SocketAddr = if self.server.is_ipv4() { ([0, 0, 0, 0], port).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, port).into() };
                    // The old port may still be in use (TIME_WAIT on our side):
                    // then any port, as the kernel also falls back to.
                    if sock.bind(&any.into()).is_err() {
                        self.stats.bump("rpc_new_source_port");
                    }
                }
                sock.connect_timeout(&self.server.into(), self.timeo)?;
                let stream: TcpStream = sock.into();
                self.local_port = stream.local_addr().ok().map(|a| a.port());
                Conn::Tcp(stream)
            }
            Proto::Udp => {
                let local: SocketAddr = if self.server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let sock = UdpSocket::bind(local)?;
                sock.connect(self.server)?;
                Conn::Udp(sock)
            }
        };
        self.stats.bump("rpc_connects");
        self.conn = Some(conn);
        Ok(())
    }

    fn drop_conn(&mut self) {
        if let Some(Conn::Tcp(s)) = self.conn.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// One call: packs it once, sends it until a reply with its XID arrives, and
    /// returns the procedure's result bytes (after the accepted-reply header).
    pub fn call(&mut self, prog: u32, vers: u32, proc: u32, cred: &opaque_auth<'static>, args: &impl Pack) -> Result<Vec<u8>, RpcError> {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1);
        let msg = rpc_msg {
            xid,
            body: msg_body::CALL(call_body { rpcvers: RPC_VERSION_2, prog, vers, proc, cred: cred.borrow(), verf: opaque_auth::default() }),
        };
        let mut body = Vec::with_capacity(msg.packed_size() + args.packed_size() + 4);
        msg.pack(&mut body).map_err(|e| RpcError::Garbage(format!("packing call: {e}")))?;
        args.pack(&mut body).map_err(|e| RpcError::Garbage(format!("packing args: {e}")))?;
        let mut timeout = self.timeo;
        let mut sent = 0u32;
        let mut connect_backoff = Duration::from_millis(20);
        loop {
            if sent > 0 {
                self.stats.bump("rpc_retransmits");
                if self.retrans > 0 && sent > self.retrans {
                    self.stats.bump("rpc_soft_timeouts");
                    return Err(RpcError::TimedOut);
                }
            }
            sent += 1;
            let deadline = Instant::now() + timeout;
            if let Err(e) = self.connect() {
                self.stats.bump("rpc_connect_errors");
                log(&format!("connect {}: {e}", self.server));
                // The old source port may be what is refused: a new one next time.
                self.local_port = None;
                std::thread::sleep(connect_backoff);
                connect_backoff = (connect_backoff * 2).min(self.timeo);
                continue;
            }
            if let Err(e) = self.send(&body) {
                self.stats.bump("rpc_send_errors");
                log(&format!("send xid {xid:#x}: {e}"));
                self.drop_conn();
                continue;
            }
            match self.receive(xid, deadline) {
                Ok(reply) => {
                    if sent > 1 {
                        self.stats.bump("rpc_replies_after_retransmit");
                    }
                    return parse_reply(reply);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                    self.stats.bump("rpc_timeouts");
                    // A TCP connection that went quiet is given up, as the kernel
                    // does after a major timeout; the call goes out on a new one.
                    if self.proto == Proto::Tcp {
                        self.drop_conn();
                    }
                    timeout = (timeout * 2).min(TIMEO_MAX);
                }
                Err(e) => {
                    self.stats.bump("rpc_connection_lost");
                    log(&format!("receive xid {xid:#x}: {e}"));
                    self.drop_conn();
                }
            }
        }
    }

    fn send(&mut self, body: &[u8]) -> io::Result<()> {
        match self.conn.as_mut().expect("connected") {
            Conn::Tcp(s) => {
                let mut rec = Vec::with_capacity(body.len() + 4);
                rec.extend_from_slice(&(0x8000_0000u32 | body.len() as u32).to_be_bytes());
                rec.extend_from_slice(body);
                s.write_all(&rec)
            }
            Conn::Udp(s) => s.send(body).map(drop),
        }
    }

    /// Reads replies until the one for `xid` (older XIDs' late replies are dropped).
    fn receive(&mut self, xid: u32, deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let record = match self.conn.as_mut().expect("connected") {
                Conn::Tcp(s) => {
                    s.set_read_timeout(Some(left))?;
                    read_record(s)?
                }
                Conn::Udp(s) => {
                    s.set_read_timeout(Some(left))?;
                    let mut buf = vec![0u8; 65536];
                    let n = s.recv(&mut buf)?;
                    buf.truncate(n);
                    buf
                }
            };
            if record.len() >= 4 && u32::from_be_bytes(record[..4].try_into().unwrap()) == xid {
                return Ok(record);
            }
            self.stats.bump("rpc_stale_replies");
        }
    }
}

fn read_record(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        s.read_exact(&mut hdr)?;
        let h = u32::from_be_bytes(hdr);
        let len = (h & 0x7fff_ffff) as usize;
        if out.len() + len > MAX_RECORD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "record too large"));
        }
        let start = out.len();
        out.resize(start + len, 0);
        s.read_exact(&mut out[start..])?;
        if h & 0x8000_0000 != 0 {
            return Ok(out);
        }
    }
}

fn parse_reply(record: Vec<u8>) -> Result<Vec<u8>, RpcError> {
    let mut cur = Cursor::new(&record[..]);
    let (msg, _) = rpc_msg::unpack(&mut cur).map_err(|e| RpcError::Garbage(e.to_string()))?;
    match msg.body {
        msg_body::REPLY(reply_body::MSG_ACCEPTED(r)) => match r.reply_data {
            accept_stat_data::SUCCESS => Ok(record[cur.position() as usize..].to_vec()),
            other => Err(RpcError::Rejected(format!("{other:?}"))),
        },
        msg_body::REPLY(reply_body::MSG_DENIED(r)) => Err(RpcError::Rejected(format!("{r:?}"))),
        msg_body::CALL(_) => Err(RpcError::Garbage("a call instead of a reply".into())),
    }
}

/// Unpacks a procedure's result from the bytes `call` returned.
pub fn decode<T: Unpack>(bytes: &[u8]) -> Result<T, RpcError> {
    T::unpack(&mut Cursor::new(bytes)).map(|(v, _)| v).map_err(|e| RpcError::Garbage(e.to_string()))
}

pub fn log(msg: &str) {
    if std::env::var_os("NFSFS_VERBOSE").is_some() {
        eprintln!("nfslock-nfsfs: {msg}");
    }
}
