//! nfslock(1), the command-line face of libnfslock, built on its Rust API
//! (`nfslock::lockfile`, `nfslock::lease`, `nfslock::session`). The binary is
//! src/main.rs; src/bin/mangen.rs renders the man page from [`args::command`].

mod admin;
pub mod args;
mod describe;
mod events;
mod exit;
mod held;
mod ids;
mod run;
mod signals;
mod status;
mod waiting;

use clap::Parser;

use args::{Cli, Command};

/// Parses the command line and runs it; the exit status.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        None => run::run(cli.run),
        Some(Command::Status(a)) => status::status(a),
        Some(Command::Unlock { path }) => admin::unlock(&path),
        Some(Command::Break { path, reason, yes }) => admin::break_lock(&path, &reason, yes),
        Some(Command::Wait { path, wait }) => admin::wait(&path, wait),
        Some(Command::Ids(a)) => ids::ids(a),
    }
}
