//! Runs one check and prints the outcome: `lease-model [doc|original|fixed] [fix flags] [MUTATION|all] [--stale N] [bounds]`.
use nfslock_lease_model::{Bounds, Mutation, Protocol};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut proto = Protocol::DOC;
    let mut b = Bounds::STANDARD;
    let mut muts: Vec<Option<Mutation>> = vec![None];
    let mut first = false;
    let mut mask = 0xffu8;
    let mut threads = 2;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "doc" => proto = Protocol::DOC,
            "fixed" => proto = Protocol::FIXED,
            "original" => proto = Protocol::ORIGINAL,
            "half-lease" => proto.unlink_within_half_lease = true,
            "take-over-x" => proto.take_over_x = true,
            "rename-parked" => proto.rename_stale_parked = true,
            "fix-a" => proto.fix_acquire_keeps_renewed_at = true,
            "fix-b" => proto.fix_break_checks_nlink = true,
            "nlink-recovery" => proto.link_recovery_by_nlink = true,
            "fix-c" => proto.fix_release_takes_own_token = true,
            "--stale" => {
                i += 1;
                b.stale = args[i].parse().expect("--stale N");
            }
            "--claims" => {
                i += 1;
                b.claims = args[i].parse().expect("--claims N");
            }
            "--epochs" => {
                i += 1;
                b.max_epoch = args[i].parse().expect("--epochs N");
            }
            "--lease" => {
                i += 1;
                b.lease = args[i].parse().expect("--lease N");
            }
            "--epochs-p0" => {
                i += 1;
                b.max_epoch_p0 = args[i].parse().expect("--epochs-p0 N");
            }
            "--max-x" => {
                i += 1;
                b.max_x = args[i].parse().expect("--max-x N");
            }
            "--no-fencing" => b.fencing = false,
            "--first" => first = true,
            "--fresh-tokens" => b.stale_tokens = false,
            "--exclusion-only" => mask = 0,
            "--threads" => {
                i += 1;
                threads = args[i].parse().expect("--threads N");
            }
            "--crashes" => {
                i += 1;
                b.max_crashes = args[i].parse().expect("--crashes N");
            }
            "all" => muts = Mutation::ALL.iter().map(|m| Some(*m)).collect(),
            m => muts = vec![Some(*Mutation::ALL.iter().find(|x| format!("{x:?}") == m).unwrap_or_else(|| panic!("unknown argument {m}")))],
        }
        i += 1;
    }
    for m in muts {
        let p = Protocol { mutation: m, ..proto };
        let t = std::time::Instant::now();
        let mut model = nfslock_lease_model::LeaseModel::new(p, b);
        model.bad_mask = mask;
        let o = nfslock_lease_model::check_model(model, threads, first || m.is_some());
        println!("== {p:?} {b:?}: {} states, depth {}, {:.1?}", o.unique_states, o.depth, t.elapsed());
        for (name, trace) in &o.violations {
            println!("VIOLATED: {name}\n{trace}");
        }
        for name in &o.unreached {
            println!("UNREACHED: {name}");
        }
        if o.violations.is_empty() && o.unreached.is_empty() {
            println!("OK");
        }
    }
}
