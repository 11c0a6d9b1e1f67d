//! Randomness that fork(2) cannot duplicate.
//!
//! Every name that must be unique to one process (claims, temporary files, session ids)
//! and every back-off jitter draws fresh bytes from getrandom(2). Nothing here keeps a
//! stream in memory: a forked child, or two siblings forked from one parent, can never
//! draw the same values, and a name seen by another user says nothing about the next.
//! One getrandom(2) call costs well under a microsecond, and names are drawn only when a
//! file is created.

use std::io::Read;

/// 64 bits from the kernel's random pool.
pub fn unpredictable_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill(&mut bytes);
    u64::from_ne_bytes(bytes)
}

/// A fresh name part: 16 lowercase hex digits nobody can predict.
pub fn unpredictable_hex() -> String {
    format!("{:016x}", unpredictable_u64())
}

fn fill(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got > 0 {
            done += got as usize;
            continue;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // A kernel without getrandom(2) (before 3.17): the same pool through its file.
            _ => return fill_from_urandom(rest),
        }
    }
}

fn fill_from_urandom(buf: &mut [u8]) {
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
    // Without any source of randomness no name can be unpredictable; a lock library
    // must not go on with guessable names.
    if let Err(e) = read {
        panic!("no randomness available (getrandom(2) and /dev/urandom both failed: {e})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_names_are_hex() {
        let a: Vec<u64> = (0..64).map(|_| unpredictable_u64()).collect();
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        let h = unpredictable_hex();
        assert_eq!(h.len(), 16);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn a_forked_child_draws_other_values_than_its_parent() {
        let _ = unpredictable_u64();
        let mut fds = [0; 2];
        // SAFETY: plain pipe/fork/write/read; the child only writes and exits.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let v = unpredictable_u64().to_ne_bytes();
                libc::write(fds[1], v.as_ptr().cast(), 8);
                libc::_exit(0);
            }
            let mine = unpredictable_u64();
            let mut theirs = [0u8; 8];
            assert_eq!(libc::read(fds[0], theirs.as_mut_ptr().cast(), 8), 8);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            libc::close(fds[0]);
            libc::close(fds[1]);
            assert_ne!(mine, u64::from_ne_bytes(theirs));
        }
    }
}
