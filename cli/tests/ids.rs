//! `nfslock ids`: new IDs, check, repair; refusing a path that is not a repository.

mod support;

use predicates::prelude::*;
use support::*;

fn ids(args: &[&str]) -> Vec<u64> {
    let out = nfslock().args(args).assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn ids_increase_per_namespace_and_survive_repair() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    let first = ids(&["ids", r, "-n", "3"]);
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]));
    let next = ids(&["ids", r]);
    assert!(next.len() == 1 && next[0] > first[2]);
    // Another namespace counts on its own.
    assert_eq!(ids(&["ids", r, "--name", "jobs", "-n", "2"]).len(), 2);
    nfslock().args(["ids", "check", r]).assert().code(0).stdout(predicate::str::contains("consistent"));
    nfslock().args(["ids", "repair", r, "--next", "1000"]).assert().success();
    assert_eq!(ids(&["ids", r]), [1000]);
    // Never back below what was issued.
    nfslock().args(["ids", "repair", r, "--next", "5"]).assert().success();
    assert_eq!(ids(&["ids", r]), [1001]);
}

#[test]
fn check_and_repair_refuse_what_is_not_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    nfslock().args(["ids", "check", missing.to_str().unwrap()]).assert().code(70).stderr(predicate::str::contains("no repository"));
    nfslock().args(["ids", "repair", missing.to_str().unwrap(), "--next", "3"]).assert().code(70);
    assert!(!missing.exists(), "nothing was made");
    nfslock().args(["ids", "repair", dir.path().to_str().unwrap()]).assert().code(64); // no --next
    nfslock().args(["ids", dir.path().to_str().unwrap(), "-n", "0"]).assert().code(64);
    nfslock().args(["ids", dir.path().to_str().unwrap(), "--name", "a/b"]).assert().code(64);
}

#[test]
fn check_reports_an_inconsistent_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = repo.to_str().unwrap();
    let issued = ids(&["ids", r, "-n", "2"]);
    // An ID lock at or past the counter's next ID, owned by no session.
    let stray = repo.join("default.ids").join((issued[1] + 5).to_string());
    std::fs::write(&stray, b"nfslock-idlock 1 session 0123456789abcdef\n").unwrap();
    std::fs::write(repo.join("default.sessions").join("not-a-session"), b"junk").unwrap();
    nfslock().args(["ids", "check", r]).assert().code(1).stdout(predicate::str::contains("inconsistent"));
}
