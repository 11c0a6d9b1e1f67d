//! Command-line options and the fault settings they share with the control file.
//!
//! The same `key=value` vocabulary is used on the command line (`--key value`
//! or `--key=value`) and in the control file (`key=value` lines), so the rig
//! can start a mount in one state and move it to another without learning two
//! spellings.

use std::fmt;
use std::path::PathBuf;

/// The operations a fault can be attached to. Kept as a small closed set so
/// the fault decisions and the statistics names stay in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Open,
    Read,
    Write,
    Link,
    Rename,
    Unlink,
    Create,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Lookup,
        Op::Getattr,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Link,
        Op::Rename,
        Op::Unlink,
        Op::Create,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Link => "link",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
            Op::Create => "create",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of operations, e.g. the ones whose replies may be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpSet(u32);

impl OpSet {
    pub fn of(ops: &[Op]) -> OpSet {
        OpSet(ops.iter().fold(0, |acc, op| acc | op.bit()))
    }

    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }

    /// Parses a comma-separated list of operation names; `allowed` limits it
    /// to the operations for which the fault makes sense.
    fn parse(text: &str, allowed: OpSet) -> Result<OpSet, String> {
        let mut set = OpSet(0);
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "none" {
                continue;
            }
            let op = Op::ALL
                .iter()
                .copied()
                .find(|op| op.name() == word)
                .filter(|op| allowed.contains(*op))
                .ok_or_else(|| format!("unknown or unsupported operation {word:?}"))?;
            set.0 |= op.bit();
        }
        Ok(set)
    }
}

impl fmt::Display for OpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Op::ALL
            .iter()
            .filter(|op| self.contains(**op))
            .map(|op| op.name())
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Operations whose reply can be "lost": a retransmitted NFS request for
/// these is answered by a server that already did the work, so the client
/// sees an error although the change happened.
pub const LOSABLE: [Op; 4] = [Op::Link, Op::Rename, Op::Unlink, Op::Create];
/// Operations that get transient errors by default (the ones named in the
/// rig's design); `--transient-ops` may add unlink, rename or create.
pub const TRANSIENT_DEFAULT: [Op; 6] =
    [Op::Open, Op::Getattr, Op::Lookup, Op::Read, Op::Write, Op::Link];

/// Everything that can change while the filesystem is mounted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Probability (0..=1) that a losable operation's reply is lost.
    pub lose_replies: f64,
    /// Probability (0..=1) that an operation fails with ESTALE/EIO/EINTR
    /// instead of being done.
    pub transient: f64,
    /// How long stat answers may be served from cache (kernel TTLs and this
    /// mount's own getattr cache); 0 disables caching.
    pub attr_cache_ms: u64,
    /// This mount's view of the server clock relative to the backing store.
    pub clock_offset_ms: i64,
    pub lose_ops: OpSet,
    pub transient_ops: OpSet,
    /// How long a rename waits before it is done (a slow call on its way to the
    /// server): two hosts' renames of one name are then in flight at once.
    pub rename_delay_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lose_replies: 0.0,
            transient: 0.0,
            attr_cache_ms: 0,
            clock_offset_ms: 0,
            lose_ops: OpSet::of(&LOSABLE),
            transient_ops: OpSet::of(&TRANSIENT_DEFAULT),
            rename_delay_ms: 0,
        }
    }
}

impl Settings {
    /// Applies one `key=value` setting. Underscores and dashes are both
    /// accepted in keys so the stats names and option names can be mixed.
    /// Returns Ok(false) if the key is not a fault setting at all.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let key = key.trim().replace('_', "-");
        let value = value.trim();
        match key.as_str() {
            "lose-replies" => self.lose_replies = parse_probability(value)?,
            "transient" => self.transient = parse_probability(value)?,
            "attr-cache-ms" => {
                self.attr_cache_ms = value
                    .parse()
                    .map_err(|_| format!("attr-cache-ms: not a whole number of ms: {value:?}"))?
            }
            "clock-offset-ms" => {
                self.clock_offset_ms = value
                    .parse()
                    .map_err(|_| format!("clock-offset-ms: not a whole number of ms: {value:?}"))?
            }
            "rename-delay-ms" => {
                self.rename_delay_ms = value
                    .parse()
                    .map_err(|_| format!("rename-delay-ms: not a whole number of ms: {value:?}"))?
            }
            "lose-ops" => self.lose_ops = OpSet::parse(value, OpSet::of(&LOSABLE))?,
            "transient-ops" => {
                self.transient_ops = OpSet::parse(value, OpSet::of(&Op::ALL))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies the lines of a control file on top of `self`. Blank lines and
    /// `#` comments are skipped; a bad line is reported and skipped so one
    /// typo does not throw away the rest of the file.
    pub fn apply_control_text(&mut self, text: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                errors.push(format!("line {}: expected key=value: {line:?}", n + 1));
                continue;
            };
            match self.apply(key, value) {
                Ok(true) => {}
                Ok(false) => errors.push(format!("line {}: unknown key {:?}", n + 1, key.trim())),
                Err(e) => errors.push(format!("line {}: {e}", n + 1)),
            }
        }
        errors
    }
}

fn parse_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("probability must be a number in 0..1: {value:?}")),
    }
}

/// The whole command line.
#[derive(Debug)]
pub struct Config {
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub settings: Settings,
    pub seed: Option<u64>,
    pub control: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    pub ready_file: Option<PathBuf>,
    pub fsname: String,
    pub verbose: bool,
}

pub const USAGE: &str = "\
usage: nfslock-faultfs [OPTIONS] BACKING_DIR MOUNTPOINT

Pass-through FUSE filesystem over BACKING_DIR that injects NFS-like faults.
Runs in the foreground until unmounted or sent SIGTERM/SIGINT.

Fault options (also accepted as key=value lines in the control file):
  --lose-replies P       probability 0..1 that link/rename/unlink/create is done
                         but reported failed (EEXIST for link and O_EXCL create,
                         ENOENT for unlink and rename)
  --lose-ops LIST        which of link,rename,unlink,create may lose replies
                         (default: all four)
  --transient P          probability 0..1 of ESTALE, EIO or EINTR instead of
                         doing the operation
  --transient-ops LIST   operations that get transient errors (default:
                         open,getattr,lookup,read,write,link)
  --attr-cache-ms N      serve stat answers (and negative lookups) from cache
                         for up to N ms (0 = no caching)
  --clock-offset-ms N    report times as backing time + N; store client-set
                         times as value - N
  --rename-delay-ms N    every rename waits N ms before it is done (a slow call:
                         renames of one name from several mounts overlap)
Other options:
  --seed S               seed for the random choices (default: from time/pid)
  --control FILE         re-read FILE (key=value lines) when its mtime changes
  --stats FILE           write operation and fault counts to FILE (atomically,
                         every 100 ms and at exit)
  --ready-file FILE      write FILE once the mount is live
  --fsname NAME          source name shown in /proc/mounts (default nfslock-faultfs)
  --verbose              log every injected fault to stderr
  -h, --help             show this help
";

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let mut settings = Settings::default();
    let mut seed = None;
    let mut control = None;
    let mut stats = None;
    let mut ready_file = None;
    let mut fsname = String::from("nfslock-faultfs");
    let mut verbose = false;
    let mut positional = Vec::new();

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            positional.extend(args.by_ref());
            break;
        }
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        if arg == "--verbose" || arg == "-v" {
            verbose = true;
            continue;
        }
        let Some(option) = arg.strip_prefix("--") else {
            positional.push(arg);
            continue;
        };
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("--{option} needs a value"))?;
                (option.to_string(), v)
            }
        };
        match key.as_str() {
            "seed" => seed = Some(value.parse().map_err(|_| format!("--seed: not a number: {value:?}"))?),
            "control" => control = Some(PathBuf::from(value)),
            "stats" => stats = Some(PathBuf::from(value)),
            "ready-file" => ready_file = Some(PathBuf::from(value)),
            "fsname" => fsname = value,
            _ => {
                if !settings.apply(&key, &value)? {
                    return Err(format!("unknown option --{key}"));
                }
            }
        }
    }

    let [backing, mountpoint]: [String; 2] = positional
        .try_into()
        .map_err(|_| "expected exactly two arguments: BACKING_DIR MOUNTPOINT".to_string())?;
    Ok(Config {
        backing: PathBuf::from(backing),
        mountpoint: PathBuf::from(mountpoint),
        settings,
        seed,
        control,
        stats,
        ready_file,
        fsname,
        verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_both_option_spellings() {
        let c = parse_args(args(&[
            "--lose-replies", "0.25", "--transient=1", "--attr-cache-ms", "500",
            "--clock-offset-ms=-3000", "--seed", "7", "--lose-ops", "link,unlink", "b", "m",
        ]))
        .unwrap();
        assert_eq!(c.settings.lose_replies, 0.25);
        assert_eq!(c.settings.transient, 1.0);
        assert_eq!(c.settings.attr_cache_ms, 500);
        assert_eq!(c.settings.clock_offset_ms, -3000);
        assert_eq!(c.seed, Some(7));
        assert!(c.settings.lose_ops.contains(Op::Link));
        assert!(!c.settings.lose_ops.contains(Op::Rename));
        assert_eq!(c.backing, PathBuf::from("b"));
        assert_eq!(c.mountpoint, PathBuf::from("m"));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse_args(args(&["--lose-replies", "2", "b", "m"])).is_err());
        assert!(parse_args(args(&["--lose-ops", "read", "b", "m"])).is_err());
        assert!(parse_args(args(&["--bogus", "1", "b", "m"])).is_err());
        assert!(parse_args(args(&["b"])).is_err());
    }

    #[test]
    fn control_text_applies_good_lines_and_reports_bad_ones() {
        let mut s = Settings::default();
        let errors = s.apply_control_text(
            "# comment\nlose-replies=0.5\n\nattr_cache_ms = 20\nnonsense\nfoo=1\ntransient=x\n",
        );
        assert_eq!(s.lose_replies, 0.5);
        assert_eq!(s.attr_cache_ms, 20);
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
