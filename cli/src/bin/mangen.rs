//! Writes nfslock(1), rendered from the parser's own definition, to the file named by
//! its one argument (or to standard output): `make build` runs it. The subcommands are
//! described in the same page (one section each), not in pages of their own.

use std::io::Write;

fn page() -> std::io::Result<Vec<u8>> {
    let cmd = nfslock_cli::args::command();
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("nfslock {}", sub.get_name());
        let sub = sub.clone().name(leak(&name)).bin_name(name.clone());
        writeln!(page, ".SH \"{}\"", name.to_uppercase())?;
        let mut part = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        for action in sub.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{name} {}", action.get_name());
            let action = action.clone().name(leak(&name)).bin_name(name.clone());
            writeln!(part, ".SH \"{name}\"")?;
            let man = clap_mangen::Man::new(action);
            man.render_synopsis_section(&mut part)?;
            man.render_description_section(&mut part)?;
            man.render_options_section(&mut part)?;
        }
        // Within the subcommand's section: subsections.
        let text = String::from_utf8_lossy(&part).replace(".SH ", ".SS ");
        page.extend_from_slice(text.as_bytes());
    }
    man.render_extra_section(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// clap names are `&'static str`; this program runs once and exits.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn main() -> std::process::ExitCode {
    let page = match page() {
        Ok(page) => page,
        Err(e) => {
            eprintln!("nfslock-mangen: rendering the page: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
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
