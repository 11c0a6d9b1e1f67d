//! Writes nfslock(1), rendered from the parser's own definition, to the file named by
//! its one argument (or to standard output): `make build` and `make install` run it.

use std::io::Write;

fn main() -> std::process::ExitCode {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(nfslock_cli::args::command()).render(&mut page) {
        eprintln!("nfslock-mangen: rendering the page: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let written = match std::env::args_os().nth(1) {
        Some(path) => std::fs::write(&path, &page).map_err(|e| format!("{}: {e}", path.to_string_lossy())),
        None => std::io::stdout().write_all(&page).map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfslock-mangen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
