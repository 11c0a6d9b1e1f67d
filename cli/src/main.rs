//! `nfslock`: see cli/README.md and nfslock(1).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(nfslock_cli::main())
}
