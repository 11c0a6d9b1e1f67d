//! The map from FUSE node ids to names in the backing directory.
//!
//! Node ids are the backing store's inode numbers (fuser sends the entry's
//! `ino` as the node id), so every mount over the same backing directory
//! reports the same st_ino for a file, hard links are one node with the
//! backing store's nlink, and a lock file and its claim compare equal exactly
//! when they are one file. The root is the one exception: FUSE fixes its node
//! id at 1 (its getattr still reports the backing st_ino).
//!
//! A node remembers the (parent node, name) pairs it was seen under, like an
//! NFS client knows how it reached a file handle. Paths are rebuilt from those
//! pairs on each use and checked with lstat: if no name still leads to the
//! same inode (another host removed or replaced it) the answer is ESTALE, as
//! an NFS server gives for a dead file handle, and the kernel then looks the
//! name up afresh.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuser::Errno;

pub const ROOT: u64 = 1;

/// Deeper than any tree the rig builds; guards against a corrupted map.
const MAX_DEPTH: u32 = 256;
/// Hard links beyond this many remembered names just lose the oldest name;
/// any one valid name is enough to reach the file.
const MAX_NAMES: usize = 16;

pub fn estale() -> Errno {
    Errno::from_i32(libc::ESTALE)
}

struct Node {
    names: Vec<(u64, OsString)>,
    /// How many entry replies the kernel holds for this node; it is dropped
    /// from the map when the kernel forgets them all.
    nlookup: u64,
}

pub struct InodeMap {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
}

impl InodeMap {
    pub fn new(root: PathBuf) -> InodeMap {
        InodeMap {
            root,
            nodes: HashMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The backing path of `ino`, checked to still be that inode.
    pub fn path(&mut self, ino: u64) -> Result<PathBuf, Errno> {
        self.path_at_depth(ino, 0)
    }

    /// The backing path of `name` in directory `parent`.
    pub fn child(&mut self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn path_at_depth(&mut self, ino: u64, depth: u32) -> Result<PathBuf, Errno> {
        if ino == ROOT {
            return Ok(self.root.clone());
        }
        if depth > MAX_DEPTH {
            return Err(estale());
        }
        let names = match self.nodes.get(&ino) {
            Some(node) => node.names.clone(),
            None => return Err(estale()),
        };
        let mut found = None;
        let mut stale = Vec::new();
        for (parent, name) in names {
            let candidate = match self.path_at_depth(parent, depth + 1) {
                Ok(dir) => dir.join(&name),
                Err(_) => {
                    stale.push((parent, name));
                    continue;
                }
            };
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.ino() == ino => {
                    found = Some(candidate);
                    break;
                }
                _ => stale.push((parent, name)),
            }
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.names.retain(|entry| !stale.contains(entry));
        }
        found.ok_or_else(estale)
    }

    /// Records an entry reply for `ino` found as `name` in `parent`.
    pub fn looked_up(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if ino == ROOT {
            return;
        }
        let node = self.nodes.entry(ino).or_insert(Node {
            names: Vec::new(),
            nlookup: 0,
        });
        node.nlookup += 1;
        add_name(node, parent, name);
    }

    /// Remembers another name of a node the kernel already knows (a link
    /// whose reply was lost still made the name).
    pub fn add_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            add_name(node, parent, name);
        }
    }

    pub fn remove_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.names.retain(|(p, n)| !(*p == parent && n == name));
        }
    }

    pub fn renamed(&mut self, ino: u64, from: (u64, &OsStr), to: (u64, &OsStr)) {
        self.remove_name(ino, from.0, from.1);
        self.add_name(ino, to.0, to.1);
    }

    /// The kernel dropped `nlookup` references to `ino`.
    pub fn forget(&mut self, ino: u64, nlookup: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlookup = node.nlookup.saturating_sub(nlookup);
            if node.nlookup == 0 {
                self.nodes.remove(&ino);
            }
        }
    }
}

fn add_name(node: &mut Node, parent: u64, name: &OsStr) {
    if node.names.iter().any(|(p, n)| *p == parent && n == name) {
        return;
    }
    if node.names.len() >= MAX_NAMES {
        node.names.remove(0);
    }
    node.names.push((parent, name.to_os_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("faultfs-inodes-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn resolves_through_parents_and_detects_replacement() {
        let root = scratch("resolve");
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        let d_ino = fs::metadata(root.join("d")).unwrap().ino();
        let f_ino = fs::metadata(root.join("d/f")).unwrap().ino();

        let mut map = InodeMap::new(root.clone());
        map.looked_up(d_ino, ROOT, OsStr::new("d"));
        map.looked_up(f_ino, d_ino, OsStr::new("f"));
        assert_eq!(map.path(f_ino).unwrap(), root.join("d/f"));

        // A directory renamed through the mount keeps its children reachable.
        fs::rename(root.join("d"), root.join("e")).unwrap();
        map.renamed(d_ino, (ROOT, OsStr::new("d")), (ROOT, OsStr::new("e")));
        assert_eq!(map.path(f_ino).unwrap(), root.join("e/f"));

        // Replaced behind our back: the old node is stale, not the new file.
        fs::remove_file(root.join("e/f")).unwrap();
        fs::write(root.join("e/g"), b"y").unwrap();
        fs::rename(root.join("e/g"), root.join("e/f")).unwrap();
        if fs::metadata(root.join("e/f")).unwrap().ino() != f_ino {
            assert_eq!(map.path(f_ino), Err(estale()));
        }

        map.forget(f_ino, 1);
        assert_eq!(map.path(f_ino), Err(estale()));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hard_links_share_a_node() {
        let root = scratch("links");
        fs::write(root.join("a"), b"x").unwrap();
        fs::hard_link(root.join("a"), root.join("b")).unwrap();
        let ino = fs::metadata(root.join("a")).unwrap().ino();
        let mut map = InodeMap::new(root.clone());
        map.looked_up(ino, ROOT, OsStr::new("a"));
        map.looked_up(ino, ROOT, OsStr::new("b"));
        fs::remove_file(root.join("a")).unwrap();
        assert_eq!(map.path(ino).unwrap(), root.join("b"));
        fs::remove_dir_all(&root).unwrap();
    }
}
