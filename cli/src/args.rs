//! The command line, as clap parses it. The same definition renders nfslock(1)
//! (src/bin/mangen.rs), so the help text, the man page and the parser never disagree.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit;

const ABOUT: &str = "Run a command holding an NFS-safe lock; see and manage locks and session IDs";

const LONG_ABOUT: &str = "\
Runs COMMAND while holding the lock on PATH (the lock file PATH.nfs_lock, compatible \
with Core's Nfs_lock and libnfslock), and exits with COMMAND's status. The lock \
excludes processes on every host that shares the directory over NFS, unlike flock(1).

Signals nfslock receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) are \
forwarded to COMMAND; the lock is released when COMMAND ends, also when nfslock was \
told to stop. If nfslock itself dies (SIGKILL), COMMAND gets SIGTERM; the lock it \
leaves is cleared by the next process of the same host that asks for it, and by other \
hosts only if it was taken with --lease (after the lease runs out).

A PATH that is also a subcommand's name (status, unlock, break, wait, ids) is written \
./status and so on.";

const EXIT_CODES: &str = "\
Exit status:
  0-255  COMMAND's own status when it ran (128+N when it was killed by signal N)
  64     usage error (bad arguments; break without --yes and no terminal)
  66     unlock, break: the lock is not held
  70     any other error (permissions, a missing directory, a symlink where the lock file should be, an unreadable lock file, I/O)
  75     busy: the lock is held (--nonblock; -E changes it); unlock: held by a live process or another host
  76     the lock was lost while COMMAND ran: its lease lost (COMMAND was sent SIGTERM), or it was broken or removed
  124    timed out (--wait; --timeout-exit-code changes it, or -E when given alone)
  126    COMMAND could not be run
  127    COMMAND was not found
  status: 0 all free, 1 some held, 2 an error. wait: 0 free, 124 timed out.
  break: 1 when the answer was no. ids check: 0 consistent, 1 inconsistent.

Examples:
  nfslock -w 5 /shared/x -- make
  nfslock -n /shared/nightly -- ./import.sh || echo \"another import is running\"
  nfslock --lease 30 /shared/db -- ./migrate
  nfslock status --json /shared/x
  nfslock break /shared/x --reason \"host build-07 is gone\"";

/// `nfslock`: the top level. Without a subcommand it runs COMMAND under the lock.
#[derive(Parser, Debug)]
#[command(
    name = "nfslock",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    override_usage = "nfslock [OPTIONS] PATH -- COMMAND [ARGS...]\n       nfslock <SUBCOMMAND> ..."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `nfslock PATH -- COMMAND`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Wait at most SECONDS for the lock (fractions allowed; default: wait forever)
    #[arg(short = 'w', long = "wait", value_name = "SECONDS", value_parser = seconds, visible_alias = "timeout")]
    pub wait: Option<Duration>,

    /// Do not wait: fail at once (exit 75, or -E) when the lock is held
    #[arg(short = 'n', long, conflicts_with = "wait", visible_alias = "nb")]
    pub nonblock: bool,

    /// The message in the lock's record, shown to whoever waits (default: the command line)
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub message: Option<String>,

    /// Take a lease of SECONDS, renewed while COMMAND runs: a lock that other hosts can
    /// break once it goes unrenewed (nfslock killed, host down). COMMAND gets SIGTERM if the
    /// lease is lost
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub lease: Option<Duration>,

    /// A shared (reader) lock: held by any number of shared holders at once, excluding
    /// exclusive ones. Shared locks are leases (--lease, default 60 s)
    #[arg(short = 's', long)]
    pub shared: bool,

    /// Exit status when the lock is busy (--nonblock) or, unless --timeout-exit-code is
    /// given, when --wait times out
    #[arg(short = 'E', long, value_name = "N", value_parser = clap::value_parser!(u8))]
    pub conflict_exit_code: Option<u8>,

    /// Exit status when --wait times out
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8))]
    pub timeout_exit_code: Option<u8>,

    /// Tell what happens on standard error (waiting, acquired, released), also when it
    /// is not a terminal
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// The path to lock; the lock file is PATH.nfs_lock
    #[arg(value_name = "PATH", required = true)]
    pub path: Option<PathBuf>,

    /// The command to run holding the lock, and its arguments
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// The exit status for a busy lock and for a timed-out wait.
    pub fn busy_code(&self) -> u8 {
        self.conflict_exit_code.unwrap_or(exit::BUSY)
    }

    pub fn timeout_code(&self) -> u8 {
        self.timeout_exit_code.or(self.conflict_exit_code).unwrap_or(exit::TIMED_OUT)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tell the state of locks: holder host, pid, message, since when, lease, fencing
    /// token, shared holders. Exit 0: all free; 1: some held; 2: an error
    Status(StatusArgs),
    /// Remove a lock whose holder is this process's host and dead (Core's unlock_exn
    /// rules); refuses a live holder's or another host's lock (exit 75; use break)
    Unlock {
        /// The locked path (or its lock file PATH.nfs_lock)
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Remove a lock whoever holds it (an operator's action): a leased holder learns it
    /// lost the lock, with REASON. Asks for confirmation on a terminal unless --yes
    Break {
        /// The locked path (or its lock file)
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Why (left for the broken holder to read)
        #[arg(long, value_name = "TEXT", required = true)]
        reason: String,
        /// Do not ask; required when standard input is not a terminal
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Wait until the lock is free (or its holder is gone). Exit 0: free; 124: timed out
    Wait {
        /// The locked path (or its lock file)
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Wait at most SECONDS (default: forever)
        #[arg(short = 'w', long = "wait", value_name = "SECONDS", value_parser = seconds, visible_alias = "timeout")]
        wait: Option<Duration>,
    },
    /// Unique increasing IDs shared by every host (a session repository DIR): prints
    /// COUNT new IDs, one a line
    Ids(IdsArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The locked paths (or their lock files)
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// One JSON object per path, one a line
    #[arg(long)]
    pub json: bool,
    /// Look again every SECONDS and print whenever something changed, until interrupted
    /// (each look watches a lease for SECONDS: one left unrenewed for longer than its
    /// lease shows as expired)
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub watch: Option<Duration>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct IdsArgs {
    #[command(subcommand)]
    pub action: Option<IdsAction>,
    /// The repository directory (created if missing)
    #[arg(value_name = "DIR", required = true)]
    pub dir: Option<PathBuf>,
    /// The ID namespace in the repository
    #[arg(long, value_name = "NAME", default_value = nfslock::session::DEFAULT_NAME)]
    pub name: String,
    /// How many IDs
    #[arg(short = 'n', long = "count", value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=nfslock::session::MAX_IDS_PER_CALL as i64))]
    pub count: u32,
}

#[derive(Subcommand, Debug)]
pub enum IdsAction {
    /// Check a repository's on-disk state. Exit 0: consistent; 1: not (the findings are printed)
    Check {
        /// The repository directory (it must exist)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The ID namespace in the repository
        #[arg(long, value_name = "NAME", default_value = nfslock::session::DEFAULT_NAME)]
        name: String,
    },
    /// Set the counter's next ID to at least N (never below an ID known to be issued or
    /// locked); also recreates a missing or corrupt counter
    Repair {
        /// The repository directory (it must exist)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The ID namespace in the repository
        #[arg(long, value_name = "NAME", default_value = nfslock::session::DEFAULT_NAME)]
        name: String,
        /// The next ID to issue, at least
        #[arg(long, value_name = "N", required = true)]
        next: u64,
    },
}

/// The parser, for the man page and for tests.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// SECONDS: a non-negative decimal number, fractions allowed ("5", "0.25").
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: seconds must be a finite number, 0 or more"));
    }
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} seconds is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(seconds("-1").is_err() && seconds("inf").is_err() && seconds("x").is_err() && seconds("1e30").is_err());
    }

    #[test]
    fn run_and_subcommands_are_told_apart() {
        let c = Cli::try_parse_from(["nfslock", "-w", "1.5", "/x", "--", "make", "-j4"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.run.wait, Some(Duration::from_millis(1500)));
        assert_eq!(c.run.command, ["make", "-j4"]);
        let c = Cli::try_parse_from(["nfslock", "/x", "ls", "-l"]).unwrap();
        assert_eq!(c.run.command, ["ls", "-l"]);
        let c = Cli::try_parse_from(["nfslock", "status", "/x", "/y", "--json"]).unwrap();
        assert!(matches!(c.command, Some(Command::Status(StatusArgs { ref paths, json: true, .. })) if paths.len() == 2));
        let c = Cli::try_parse_from(["nfslock", "ids", "check", "/r"]).unwrap();
        assert!(matches!(c.command, Some(Command::Ids(IdsArgs { action: Some(IdsAction::Check { .. }), .. }))));
        let c = Cli::try_parse_from(["nfslock", "ids", "/r", "-n", "3"]).unwrap();
        assert!(matches!(c.command, Some(Command::Ids(IdsArgs { action: None, count: 3, .. }))));
        assert!(Cli::try_parse_from(["nfslock", "/x"]).is_err());
        assert!(Cli::try_parse_from(["nfslock", "-n", "-w", "1", "/x", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["nfslock", "break", "/x"]).is_err());
    }

    #[test]
    fn exit_codes_follow_flock() {
        let c = Cli::try_parse_from(["nfslock", "-E", "9", "/x", "--", "true"]).unwrap();
        assert_eq!((c.run.busy_code(), c.run.timeout_code()), (9, 9));
        let c = Cli::try_parse_from(["nfslock", "-E", "9", "--timeout-exit-code", "8", "/x", "--", "true"]).unwrap();
        assert_eq!((c.run.busy_code(), c.run.timeout_code()), (9, 8));
        let c = Cli::try_parse_from(["nfslock", "/x", "--", "true"]).unwrap();
        assert_eq!((c.run.busy_code(), c.run.timeout_code()), (exit::BUSY, exit::TIMED_OUT));
    }
}
