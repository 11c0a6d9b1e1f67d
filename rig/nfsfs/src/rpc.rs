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

/// The RPC log (`--rpc-log=FILE`): one line per send, reply, timeout and connection
/// event, with the XID, so a capture of what the client did is at hand without
/// tcpdump: `MS xid=X proc=P try=N EVENT [port=L] [status=S] [what]`.
static RPC_LOG: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

pub fn open_rpc_log(path: &std::path::Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let _ = RPC_LOG.set(std::sync::Mutex::new(f));
    Ok(())
}

fn trace(xid: u32, proc: u32, attempt: u32, event: &str, what: &str) {
    if let Some(f) = RPC_LOG.get() {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as f64 / 1000.0;
        let _ = writeln!(f.lock().unwrap(), "{ms:.3} xid={xid:08x} proc={proc} try={attempt} {event} {what}");
    }
}

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
    connected_once: bool,
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
        Rpc { server, proto, conn: None, local_port: None, connected_once: false, next_xid: xid, timeo, retrans, stats }
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
                    let any: SocketAddr =
                        if self.server.is_ipv4() { ([0, 0, 0, 0], port).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, port).into() };
                    // The old port may still be taken: then any port, as the kernel
                    // also falls back to (xs_bind). Connections end with an abort (no
                    // TIME_WAIT on our side), so this is rare, not impossible.
                    if sock.bind(&any.into()).is_err() {
                        self.local_port = None;
                    }
                }
                match sock.connect_timeout(&self.server.into(), self.timeo) {
                    Ok(()) => {}
                    // The 4-tuple is still known to our stack: only a new port helps.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)) => {
                        self.local_port = None;
                        return Err(e);
                    }
                    // Refused (the server restarting), or no answer to the SYN in
                    // time (a dropped SYN or SYN-ACK: TCP would send it again only
                    // after 1 s): the next attempt keeps the source port. Giving it up
                    // here made the server's duplicate request cache, which ganesha
                    // keys by client address and port, miss the retransmission: a
                    // REMOVE was executed a second time, after another host had
                    // created the name again (issue 16, rig/nfsfs/README.md).
                    Err(e) => {
                        // The half-open socket ends with an abort: the port is free at once.
                        let _ = sock.set_linger(Some(Duration::ZERO));
                        return Err(e);
                    }
                }
                let stream: TcpStream = sock.into();
                let port = stream.local_addr().ok().map(|a| a.port());
                if self.connected_once && port != self.local_port {
                    self.stats.bump("rpc_new_source_port");
                }
                self.local_port = port;
                Conn::Tcp(stream)
            }
            Proto::Udp => {
                // One socket (one source port) for the life of the mount, as the
                // kernel's UDP transport: the duplicate request cache sees every
                // retransmission from the address and port of the first sending.
                let local: SocketAddr =
                    if self.server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let sock = UdpSocket::bind(local)?;
                sock.connect(self.server)?;
                Conn::Udp(sock)
            }
        };
        self.connected_once = true;
        self.stats.bump("rpc_connects");
        self.conn = Some(conn);
        Ok(())
    }

    /// Gives up a TCP connection with an abort (SO_LINGER 0: a RST, as the kernel's
    /// xs_abort_connection), not a FIN: an orderly close leaves the port in TIME_WAIT
    /// on our side, and the reconnection from the same port, which the server's
    /// duplicate request cache needs, would be refused. A UDP socket is kept: it
    /// has no connection to lose, and its port must not change.
    fn drop_conn(&mut self) {
        if let Some(Conn::Tcp(s)) = &self.conn {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            self.conn = None;
        }
    }

    /// One call: packs it once, sends it until a reply with its XID arrives, and
    /// returns the procedure's result bytes (after the accepted-reply header).
    pub fn call(
        &mut self,
        prog: u32,
        vers: u32,
        proc: u32,
        cred: &opaque_auth<'static>,
        args: &impl Pack,
        what: &str,
    ) -> Result<Vec<u8>, RpcError> {
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
                trace(xid, proc, sent, &format!("connect-error port={} {e}", self.local_port.unwrap_or(0)), what);
                std::thread::sleep(connect_backoff);
                connect_backoff = (connect_backoff * 2).min(self.timeo);
                continue;
            }
            let port = self.port();
            trace(xid, proc, sent, &format!("send port={port}"), what);
            if let Err(e) = self.send(&body) {
                trace(xid, proc, sent, &format!("send-error {e}"), what);
                self.stats.bump("rpc_send_errors");
                log(&format!("send xid {xid:#x}: {e}"));
                self.drop_conn();
                continue;
            }
            match self.receive(xid, deadline) {
                Ok(reply) => {
                    if prog == 100003 {
                        let status =
                            parse_reply(reply.clone()).ok().and_then(|r| r.get(..4).map(|b| u32::from_be_bytes(b.try_into().unwrap())));
                        trace(xid, proc, sent, &format!("reply status={}", status.map_or("-".into(), |s| s.to_string())), what);
                    }
                    if sent > 1 {
                        self.stats.bump("rpc_replies_after_retransmit");
                    }
                    return parse_reply(reply);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                    self.stats.bump("rpc_timeouts");
                    trace(xid, proc, sent, "timeout", what);
                    // A TCP connection that went quiet is given up, as the kernel
                    // does after a major timeout; the call goes out on a new one.
                    if self.proto == Proto::Tcp {
                        self.drop_conn();
                    }
                    timeout = (timeout * 2).min(TIMEO_MAX);
                }
                Err(e) => {
                    self.stats.bump("rpc_connection_lost");
                    trace(xid, proc, sent, &format!("connection-lost {e}"), what);
                    log(&format!("receive xid {xid:#x}: {e}"));
                    self.drop_conn();
                }
            }
        }
    }

    fn port(&self) -> u16 {
        match &self.conn {
            Some(Conn::Tcp(s)) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            Some(Conn::Udp(s)) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            None => 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;

    /// Reads one record-marked call from `s`: (xid, whole record).
    fn read_call(s: &mut TcpStream) -> (u32, Vec<u8>) {
        let rec = read_record(s).expect("a call");
        (u32::from_be_bytes(rec[..4].try_into().unwrap()), rec)
    }

    /// An accepted, successful reply to `xid` with `result` as the procedure's bytes.
    fn reply(s: &mut TcpStream, xid: u32, result: &[u8]) {
        let mut body = Vec::new();
        for w in [xid, 1, 0, 0, 0, 0] {
            // xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE with no body, SUCCESS
            body.extend_from_slice(&w.to_be_bytes());
        }
        body.extend_from_slice(result);
        let mut rec = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
        rec.extend_from_slice(&body);
        s.write_all(&rec).unwrap();
    }

    /// The reply to a call is lost (the connection breaks after the call was read), and
    /// the server refuses connections for a while (as while restarting): the call goes
    /// out again with the same XID, the same bytes, and from the same source port, so
    /// a duplicate request cache keyed by client address and port recognises it. The
    /// port was given up after a failed connect before (issue 16: a REMOVE executed
    /// twice).
    #[test]
    fn a_retransmission_keeps_xid_bytes_and_source_port_across_refused_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let server = std::thread::spawn(move || {
            let (mut first, peer1) = listener.accept().unwrap();
            let (xid1, call1) = read_call(&mut first);
            // Lost reply: the connection is reset without an answer, and nobody
            // listens for 300 ms (connects are refused).
            socket2::SockRef::from(&first).set_linger(Some(Duration::ZERO)).unwrap();
            drop(first);
            drop(listener);
            std::thread::sleep(Duration::from_millis(300));
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_reuse_address(true).unwrap();
            sock.bind(&addr.into()).unwrap();
            sock.listen(4).unwrap();
            let listener: TcpListener = sock.into();
            let (mut second, peer2) = listener.accept().unwrap();
            let (xid2, call2) = read_call(&mut second);
            reply(&mut second, xid2, &[0, 0, 0, 7]);
            (xid1, xid2, call1 == call2, peer1.port(), peer2.port())
        });
        let mut rpc = Rpc::new(addr, Proto::Tcp, Duration::from_millis(50), 0, stats.clone());
        let cred = opaque_auth::default();
        let got = rpc.call(100003, 3, 12, &cred, &7u32, "test").expect("answered after the retransmission");
        assert_eq!(got, vec![0, 0, 0, 7]);
        let (xid1, xid2, same_bytes, port1, port2) = server.join().unwrap();
        assert_eq!(xid1, xid2, "the retransmission has the call's XID");
        assert!(same_bytes, "the retransmission is the same bytes");
        assert_eq!(port1, port2, "the retransmission comes from the first connection's source port");
        let counters = stats.render(&[]);
        assert!(counters.contains("rpc_connect_errors="), "connects were refused in between: {counters}");
        assert!(!counters.contains("rpc_new_source_port"), "{counters}");
    }
}
