//! Store format 1 → 2: format 1 kept every tree node under `'n' || id || index` (40 bytes:
//! u64 LE size · hash) and every block under `'b' || id || seq`. Both move into pages; blocks
//! larger than `INLINE_MAX` keep their `'b'` key, which format 2 reads the same way.
//! Restartable: pages are written before the old keys are removed, and staging a page
//! merges what sled already holds.

use super::key_tail;
use super::page::INLINE_MAX;
use super::staged::Staged;
use crate::error::{Error, Result};
use crate::merkle::Node;

/// Old keys removed per sled batch.
const STEP: usize = 10_000;

pub(super) fn from_format_1(tree: &sled::Tree) -> Result<()> {
    let mut st = Staged::default();
    for kind in [b'n', b'b'] {
        let mut current: Option<u64> = None;
        let mut done: Vec<sled::IVec> = Vec::new();
        for kv in tree.scan_prefix([kind]) {
            let (k, v) = kv?;
            let id = key_id(&k)?;
            if current.is_some_and(|c| c != id) || done.len() >= STEP {
                finish(tree, &mut st, current, &mut done)?;
            }
            current = Some(id);
            let n = key_tail(&k)?;
            if kind == b'n' {
                let size = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                let hash = v.get(8..).and_then(|b| b.try_into().ok());
                let (Some(size), Some(hash), 40) = (size, hash, v.len()) else {
                    return Err(Error::corruption(format!(
                        "format 1 node {n} of {} bytes",
                        v.len()
                    )));
                };
                st.put_node(
                    tree,
                    id,
                    &Node {
                        index: n,
                        size,
                        hash,
                    },
                )?;
                done.push(k);
            } else if v.len() <= INLINE_MAX {
                st.put_block(tree, id, n, v.to_vec())?;
                done.push(k);
            } else {
                // Stays under its key; put_block rewrites it and flags it in the page.
                st.put_block(tree, id, n, v.to_vec())?;
            }
        }
        finish(tree, &mut st, current, &mut done)?;
    }
    Ok(())
}

/// Writes the staged pages of core `id`, then removes the old keys they replace.
fn finish(
    tree: &sled::Tree,
    st: &mut Staged,
    id: Option<u64>,
    done: &mut Vec<sled::IVec>,
) -> Result<()> {
    if let Some(id) = id {
        st.write_now(tree, id)?;
    }
    let mut batch = sled::Batch::default();
    for k in done.drain(..) {
        batch.remove(k);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

fn key_id(k: &[u8]) -> Result<u64> {
    k.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::corruption("bad format 1 key"))
}

#[cfg(test)]
mod tests {
    use crate::id::Key;
    use crate::store::Store;

    #[test]
    fn format_1_store_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key([9; 32]);
        {
            let db = sled::open(dir.path()).unwrap();
            let t = db.open_tree("hypercore").unwrap();
            let id = 7u64;
            let mut k = vec![b'k'];
            k.extend_from_slice(key.as_bytes());
            t.insert(k, &id.to_be_bytes()).unwrap();
            for seq in 0..40u64 {
                let mut bk = vec![b'b'];
                bk.extend_from_slice(&id.to_be_bytes());
                bk.extend_from_slice(&seq.to_be_bytes());
                let v = if seq == 5 {
                    vec![1u8; 2000]
                } else {
                    vec![seq as u8; 10]
                };
                t.insert(bk, v).unwrap();
                let mut nk = vec![b'n'];
                nk.extend_from_slice(&id.to_be_bytes());
                nk.extend_from_slice(&(2 * seq).to_be_bytes());
                let mut nv = (seq + 100).to_le_bytes().to_vec();
                nv.extend_from_slice(&[seq as u8; 32]);
                t.insert(nk, nv).unwrap();
            }
            db.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let c = s.core(&key).unwrap();
        assert_eq!(c.block_count().unwrap(), 40);
        assert_eq!(c.block(5).unwrap().unwrap(), vec![1u8; 2000]);
        assert_eq!(c.block(39).unwrap().unwrap(), vec![39u8; 10]);
        let n = c.node(78).unwrap().unwrap();
        assert_eq!((n.size, n.hash), (139, [39; 32]));
        assert!(s.tree().scan_prefix(b"n").next().is_none());
        assert_eq!(
            s.tree().scan_prefix(b"b").count(),
            1,
            "the large block keeps its key"
        );
        drop(c);
        drop(s);
        // Opening again is a no-op.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.core(&key).unwrap().block_count().unwrap(), 40);
    }
}
