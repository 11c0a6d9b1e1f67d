use std::path::PathBuf;

use super::*;
use crate::fsops;

/// A repository directory with its ids directory, removed when dropped.
struct Scratch {
    dir: PathBuf,
    repo: Repo,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nfslock-combine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = Repo::new("test", &dir, "jobs").unwrap();
        std::fs::create_dir_all(&repo.ids).unwrap();
        Scratch { dir, repo }
    }

    fn claim(&self, sid: &str) -> Claim {
        idlock::create_claim(&self.repo, sid, 0).unwrap().0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn me() -> Identity {
    Identity::of_this_process()
}

fn request<'a>(sid: &'a str, claim: &Claim, n: usize) -> Request<'a> {
    Request { sid, claim_no: claim.number, claim_file: claim.file, n }
}

/// A pid that is certainly gone: a child that has exited and been waited for.
fn gone_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

const SID_A: &str = "00000000000000aa";
const SID_B: &str = "00000000000000bb";

#[test]
fn a_served_request_gets_the_ids_after_the_combiners_own() {
    let s = Scratch::new("served");
    let table = Table::open(&s.repo.ids).expect("table");
    let claim = s.claim(SID_A);
    let ticket = table.post(&me(), request(SID_A, &claim, 3), 0).expect("posted");
    assert!(!table.taken(&ticket));
    let batch = table.serve(&s.repo, &me(), 10);
    assert_eq!(batch.end, 13);
    assert!(table.taken(&ticket));
    for id in 10..13 {
        assert_eq!(fsops::id_of(&s.repo.id_path(id)), Ok(claim.file), "ID {id} linked to the requester's claim");
    }
    table.finish(&s.repo, batch, Ok(()));
    assert_eq!(table.settle(&ticket, Duration::ZERO), Outcome::Done(10));
    assert_eq!(table.slots()[ticket.slot].word.load(SeqCst), FREE, "the slot is free again");
}

#[test]
fn a_withdrawn_request_is_not_served_and_a_failed_round_undoes_its_links() {
    let s = Scratch::new("withdrawn");
    let table = Table::open(&s.repo.ids).expect("table");
    let (a, b) = (s.claim(SID_A), s.claim(SID_B));
    let mine = table.post(&me(), request(SID_A, &a, 1), 0).unwrap();
    let theirs = table.post(&me(), request(SID_B, &b, 2), 0).unwrap();
    assert!(table.withdraw(&mine));
    assert!(!table.withdraw(&mine), "only once");
    let batch = table.serve(&s.repo, &me(), 5);
    assert_eq!(batch.end, 7, "only the other request");
    table.finish(&s.repo, batch, Err(Errno::EIO));
    assert_eq!(table.settle(&theirs, Duration::ZERO), Outcome::Failed(Errno::EIO));
    assert!(fsops::lstat(&s.repo.id_path(5)).is_err() && fsops::lstat(&s.repo.id_path(6)).is_err(), "links undone");
}

#[test]
fn an_id_found_locked_fails_the_request_without_leaving_links() {
    let s = Scratch::new("locked");
    let table = Table::open(&s.repo.ids).expect("table");
    let (a, b) = (s.claim(SID_A), s.claim(SID_B));
    assert_eq!(idlock::take(&s.repo, &b, 21), Ok(Take::Ours));
    let ticket = table.post(&me(), request(SID_A, &a, 3), 0).unwrap();
    let batch = table.serve(&s.repo, &me(), 20);
    assert_eq!(batch.end, 20);
    table.finish(&s.repo, batch, Ok(()));
    assert_eq!(table.settle(&ticket, Duration::ZERO), Outcome::Failed(Errno::EAGAIN));
    assert!(fsops::lstat(&s.repo.id_path(20)).is_err(), "the link made before the locked ID is undone");
    assert_eq!(fsops::id_of(&s.repo.id_path(21)), Ok(b.file), "the other lock is untouched");
}

#[test]
fn a_request_whose_combiner_died_is_orphaned_and_one_still_held_is_pending() {
    let s = Scratch::new("orphan");
    let table = Table::open(&s.repo.ids).expect("table");
    let a = s.claim(SID_A);
    let ticket = table.post(&me(), request(SID_A, &a, 2), 0).unwrap();
    let slot = &table.slots()[ticket.slot];
    // Taken by a live combiner (this process): still pending after no wait.
    slot.word.store(word(me().pid as u32, ticket.ticket, TAKEN), SeqCst);
    slot.first.store(40, SeqCst);
    assert_eq!(table.settle(&ticket, Duration::ZERO), Outcome::Pending(me().pid as u32));
    // Taken by a process that is gone.
    slot.word.store(word(gone_pid(), ticket.ticket, TAKEN), SeqCst);
    assert_eq!(table.settle(&ticket, Duration::from_secs(5)), Outcome::Orphaned(Some(40)));
    assert_eq!(slot.word.load(SeqCst), FREE);
}

#[test]
fn slots_of_gone_requesters_are_reclaimed_when_none_is_free() {
    let s = Scratch::new("reclaim");
    let table = Table::open(&s.repo.ids).expect("table");
    let a = s.claim(SID_A);
    let dead = gone_pid();
    for slot in table.slots() {
        slot.word.store(word(dead, 1, POSTED), SeqCst);
    }
    let ticket = table.post(&me(), request(SID_A, &a, 1), 0);
    assert!(ticket.is_some(), "a slot of the gone requester was reclaimed");
    // Requests of live owners are never reclaimed.
    for slot in table.slots() {
        slot.word.store(word(me().pid as u32, 1, POSTED), SeqCst);
    }
    assert!(table.post(&me(), request(SID_A, &a, 1), 0).is_none());
}

#[test]
fn bad_requests_are_refused_on_both_sides() {
    let s = Scratch::new("bad");
    let table = Table::open(&s.repo.ids).expect("table");
    let a = s.claim(SID_A);
    assert!(table.post(&me(), request(SID_A, &a, 0), 0).is_none());
    assert!(table.post(&me(), request(SID_A, &a, MAX_COMBINED + 1), 0).is_none());
    assert!(table.post(&me(), request("../../etc/passwd", &a, 1), 0).is_none());
    // A slot whose session id was garbled in the table fails, and nothing is linked.
    let ticket = table.post(&me(), request(SID_A, &a, 1), 0).unwrap();
    table.slots()[ticket.slot].sid[0].store(u64::from_le_bytes(*b"../../x/"), SeqCst);
    let batch = table.serve(&s.repo, &me(), 3);
    assert_eq!(batch.end, 3);
    table.finish(&s.repo, batch, Ok(()));
    assert_eq!(table.settle(&ticket, Duration::ZERO), Outcome::Failed(Errno::EINVAL));
    assert!(fsops::lstat(&s.repo.id_path(3)).is_err());
}

#[test]
fn sessions_on_one_directory_share_a_table_that_the_last_one_removes() {
    let s = Scratch::new("shared");
    let first = Table::open(&s.repo.ids).expect("table");
    let second = Table::open(&s.repo.ids).expect("table");
    let path = first.path().to_path_buf();
    assert_eq!(path, second.path());
    let st = fsops::lstat(&path).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o600, "private to its user");
    let a = s.claim(SID_A);
    let ticket = first.post(&me(), request(SID_A, &a, 1), 0).unwrap();
    assert!(second.withdraw(&ticket), "the same slots");
    drop(first);
    assert!(fsops::lstat(&path).is_ok(), "kept while another session uses it");
    drop(second);
    assert_eq!(fsops::lstat(&path).err(), Some(Errno::ENOENT), "removed by the last");
}

#[test]
fn a_table_name_taken_by_a_symlink_or_a_shared_file_is_not_used() {
    let s = Scratch::new("hostile");
    let probe = Table::open(&s.repo.ids).expect("table");
    let path = probe.path().to_path_buf();
    drop(probe);
    std::os::unix::fs::symlink("/dev/null", &path).unwrap();
    assert!(Table::open(&s.repo.ids).is_none(), "a symlink is not followed");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    assert!(Table::open(&s.repo.ids).is_none(), "a file others may write is not trusted");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_dead_combiners_round_is_undone_by_a_third_session() {
    let s = Scratch::new("undo");
    let table = Table::open(&s.repo.ids).expect("table");
    let (a, b) = (s.claim(SID_A), s.claim(SID_B));
    let ticket = table.post(&me(), request(SID_A, &a, 2), 0).unwrap();
    // A combiner links the request, then dies before its counter write.
    let batch = table.serve(&s.repo, &me(), 50);
    assert_eq!(batch.end, 52);
    let slot = &table.slots()[ticket.slot];
    slot.word.store(word(gone_pid(), ticket.ticket, TAKEN), SeqCst);
    slot.combiner_start.store(0, SeqCst);
    // A lock of another session in the range is not the dead round's: left alone.
    assert_eq!(idlock::take(&s.repo, &b, 53), Ok(Take::Ours));
    assert!(table.undo_dead_rounds(&s.repo, &me()));
    assert!(!table.undo_dead_rounds(&s.repo, &me()), "once");
    assert!(fsops::lstat(&s.repo.id_path(50)).is_err() && fsops::lstat(&s.repo.id_path(51)).is_err(), "its links are gone");
    assert_eq!(fsops::id_of(&s.repo.id_path(53)), Ok(b.file));
    assert_eq!(table.settle(&ticket, Duration::ZERO), Outcome::Failed(Errno::EOWNERDEAD));
    drop(batch);
}

#[test]
fn a_sweep_removes_the_tables_no_one_holds_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("sweep");
    // A directory of its own stands for /dev/shm: no other test's tables are in it.
    let shm = s.dir.join("shm");
    std::fs::create_dir(&shm).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let table = |what: &str| shm.join(format!("{}{what}", table::name_prefix(uid)));
    let (orphan, held, creating, open_to_all, link, fifo) =
        (table("orphan"), table("held"), table("creating"), table("open"), table("link"), table("fifo"));
    let someone_else = shm.join(format!("{}orphan", table::name_prefix(uid + 1)));
    let target = s.dir.join("target");
    for (path, mode) in [(&orphan, 0o600), (&held, 0o600), (&open_to_all, 0o666), (&target, 0o600), (&someone_else, 0o600)] {
        std::fs::write(path, [0u8; 4096]).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(&creating, b"").unwrap();
    std::fs::set_permissions(&creating, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
    let holder = std::fs::File::open(&held).unwrap();
    fsops::try_flock_shared(&holder).unwrap();

    // On a thread: a sweep that waited on the FIFO for a writer would never return.
    let (done, swept) = std::sync::mpsc::channel();
    let dir = shm.clone();
    std::thread::spawn(move || {
        table::sweep_unused(&dir, uid);
        done.send(())
    });
    assert!(swept.recv_timeout(Duration::from_secs(10)).is_ok(), "the sweep returns (a FIFO is not waited on)");
    let exists = |p: &PathBuf| fsops::lstat(p).is_ok();
    assert!(!exists(&orphan), "a table no one holds is removed");
    assert!(exists(&held), "a table a session holds is kept");
    assert!(exists(&creating), "an empty one, not yet locked by the session creating it, is kept");
    assert!(exists(&someone_else), "another user's name is not looked at");
    for path in [&open_to_all, &link, &target, &fifo] {
        assert!(exists(path), "{} is not a trusted table: left alone", path.display());
    }
}

#[test]
fn a_leaving_last_user_sweeps_dev_shm() {
    let s = Scratch::new("sweep-shm");
    let table = Table::open(&s.repo.ids).expect("table");
    let name = table.path().file_name().unwrap().to_string_lossy().into_owned();
    let prefix: String = name.split_inclusive('-').take(4).collect();
    let orphan = table.path().with_file_name(format!("{prefix}sweep-{}", std::process::id()));
    let _gone_anyway = RemovedOnDrop(vec![orphan.clone()]);
    // Written with the default mode (readable by others: no table to the sweep of a
    // parallel test), then made one.
    std::fs::write(&orphan, [0u8; 4096]).unwrap();
    std::fs::set_permissions(&orphan, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    drop(table);
    assert!(fsops::lstat(&orphan).is_err(), "a table left by a killed last user is removed");
}

/// Files outside the scratch directory, removed also when the test fails.
struct RemovedOnDrop(Vec<PathBuf>);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}
