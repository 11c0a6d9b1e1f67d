//! The layout of a manager's shared-memory segment, version 1, and the check of a
//! segment's header before anything in it is used.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "NFSLKSHM"
//!      8     4  version (1)
//!     12     4  num_locks (a multiple of 32)
//!     16     4  sizeof(pthread_mutex_t) of the processes that made it
//!     20     4  group size in bytes
//!     24     4  header size (64)
//!     28     4  reserved, 0
//!     32     8  total size in bytes
//!     40    24  reserved, 0
//!     64        num_locks / 32 groups: u32 bitmap of allocated IDs (bit i: ID 32g+i),
//!               u32 padding, 32 robust process-shared error-checking pthread mutexes
//! ```
//! Native byte order: a segment is shared by the processes of one machine only.

use std::mem::size_of;

/// Where glibc's shm_open(3) keeps segments: "/name" is the file SHM_DIR/name.
pub const SHM_DIR: &str = "/dev/shm";
/// The most locks a segment has (about 41 MiB of mutexes).
pub const MAX_SHM_LOCKS: u32 = 1 << 20;

pub(crate) const MAGIC: [u8; 8] = *b"NFSLKSHM";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_SIZE: usize = 64;
pub(crate) const LOCKS_PER_GROUP: u32 = 32;
/// The bitmap and its padding, before a group's mutexes (which want 8-byte alignment).
pub(crate) const GROUP_PREFIX: usize = 8;
pub(crate) const MUTEX_SIZE: usize = size_of::<libc::pthread_mutex_t>();
pub(crate) const GROUP_SIZE: usize = GROUP_PREFIX + LOCKS_PER_GROUP as usize * MUTEX_SIZE;

/// A segment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub num_locks: u32,
    pub total_size: u64,
}

/// The lock count a request for `n` locks gets: rounded up to whole groups.
pub fn rounded(n: u32) -> Option<u32> {
    (n > 0 && n <= MAX_SHM_LOCKS).then(|| n.div_ceil(LOCKS_PER_GROUP) * LOCKS_PER_GROUP)
}

pub fn total_size(num_locks: u32) -> usize {
    HEADER_SIZE + (num_locks / LOCKS_PER_GROUP) as usize * GROUP_SIZE
}

/// Where lock `id`'s mutex starts, from the segment's start.
pub fn mutex_offset(id: u32) -> usize {
    let (group, index) = ((id / LOCKS_PER_GROUP) as usize, (id % LOCKS_PER_GROUP) as usize);
    HEADER_SIZE + group * GROUP_SIZE + GROUP_PREFIX + index * MUTEX_SIZE
}

/// Where group `g`'s bitmap is.
pub fn bitmap_offset(group: usize) -> usize {
    HEADER_SIZE + group * GROUP_SIZE
}

/// The header of a new segment of `num_locks` (already rounded).
pub fn encode(num_locks: u32) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_ne_bytes());
    h[12..16].copy_from_slice(&num_locks.to_ne_bytes());
    h[16..20].copy_from_slice(&(MUTEX_SIZE as u32).to_ne_bytes());
    h[20..24].copy_from_slice(&(GROUP_SIZE as u32).to_ne_bytes());
    h[24..28].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    h[32..40].copy_from_slice(&(total_size(num_locks) as u64).to_ne_bytes());
    h
}

fn u32_at(h: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(h[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the first bytes of a segment of `file_size` bytes. Err: why it is not a
/// segment of this layout (the caller reports EBADMSG).
pub fn decode(h: &[u8], file_size: u64) -> Result<Header, String> {
    if h.len() < HEADER_SIZE {
        return Err(format!("{} bytes long, shorter than a segment's {HEADER_SIZE}-byte header", h.len()));
    }
    if h[0..8] != MAGIC {
        return Err("no manager segment magic number (\"NFSLKSHM\") at its start".into());
    }
    let field = |name: &str, at: usize, want: u32| {
        let got = u32_at(h, at);
        if got == want {
            Ok(())
        } else {
            Err(format!("its {name} is {got}, this library's is {want}"))
        }
    };
    field("layout version", 8, VERSION)?;
    field("pthread_mutex_t size", 16, MUTEX_SIZE as u32)?;
    field("group size", 20, GROUP_SIZE as u32)?;
    field("header size", 24, HEADER_SIZE as u32)?;
    if u32_at(h, 28) != 0 || h[40..HEADER_SIZE].iter().any(|&b| b != 0) {
        return Err("its header's reserved bytes are not zero".into());
    }
    let num_locks = u32_at(h, 12);
    if rounded(num_locks) != Some(num_locks) {
        return Err(format!("its lock count {num_locks} is not a multiple of {LOCKS_PER_GROUP} in 32..={MAX_SHM_LOCKS}"));
    }
    let total = u64::from_ne_bytes(h[32..40].try_into().expect("8 bytes"));
    if total != total_size(num_locks) as u64 {
        return Err(format!("its header says {total} bytes, {num_locks} locks take {}", total_size(num_locks)));
    }
    if file_size != total {
        return Err(format!("it is {file_size} bytes long, its header says {total}"));
    }
    Ok(Header { num_locks, total_size: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_up_to_whole_groups_within_bounds() {
        assert_eq!(rounded(0), None);
        assert_eq!(rounded(1), Some(32));
        assert_eq!(rounded(32), Some(32));
        assert_eq!(rounded(33), Some(64));
        assert_eq!(rounded(MAX_SHM_LOCKS), Some(MAX_SHM_LOCKS));
        assert_eq!(rounded(MAX_SHM_LOCKS + 1), None);
    }

    #[test]
    fn a_header_decodes_to_what_was_encoded_and_every_changed_byte_is_refused() {
        let h = encode(64);
        let size = total_size(64) as u64;
        assert_eq!(decode(&h, size), Ok(Header { num_locks: 64, total_size: size }));
        for at in 0..HEADER_SIZE {
            for bit in 0..8 {
                let mut bad = h;
                bad[at] ^= 1 << bit;
                // A count of another whole number of groups with a matching total is
                // refused by the total; nothing else may pass.
                assert!(decode(&bad, size).is_err(), "byte {at} bit {bit} passed");
            }
        }
        assert!(decode(&h, size + 1).is_err());
        assert!(decode(&h[..63], size).is_err());
    }

    #[test]
    fn mutexes_are_aligned_and_inside_their_group() {
        for id in [0, 1, 31, 32, 63, 1000] {
            let at = mutex_offset(id);
            assert_eq!(at % 8, 0);
            let group = (id / 32) as usize;
            assert!(at >= bitmap_offset(group) + GROUP_PREFIX && at + MUTEX_SIZE <= bitmap_offset(group + 1));
        }
    }
}
