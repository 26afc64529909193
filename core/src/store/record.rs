//! The head record of a core (format in the module docs of `store`).

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::merkle::{Head, Node};

/// What we keep about one core besides its nodes and blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreRecord {
    /// The verified signed head.
    pub head: Head,
    /// The encoded manifest, once known (non-compat cores).
    pub manifest: Option<Vec<u8>>,
    /// Blocks `[0, contiguous)` are all stored.
    pub contiguous: u64,
    /// The last truncations seen: `(new fork, first seq cut)`, oldest first (at most
    /// [`MAX_TRUNCATIONS`]).
    pub truncations: Vec<(u64, u64)>,
}

/// Truncations a record remembers: enough to tell a reader which of its blocks a recent
/// fork cut, while an author truncating forever cannot grow the record.
pub const MAX_TRUNCATIONS: usize = 16;

impl CoreRecord {
    /// Adds a truncation to `list`, dropping the oldest past [`MAX_TRUNCATIONS`].
    pub(crate) fn push_truncation(list: &mut Vec<(u64, u64)>, fork: u64, cut: u64) {
        list.push((fork, cut));
        if list.len() > MAX_TRUNCATIONS {
            list.remove(0);
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.uint(1)
            .uint(self.head.length)
            .uint(self.head.fork)
            .optional_buffer(self.head.signature.as_deref())
            .optional_buffer(self.manifest.as_deref())
            .uint(self.head.roots.len() as u64);
        for r in &self.head.roots {
            w.uint(r.index).uint(r.size).raw(&r.hash);
        }
        w.uint(self.contiguous);
        w.uint(self.truncations.len() as u64);
        for (fork, cut) in &self.truncations {
            w.uint(*fork).uint(*cut);
        }
        w.finish()
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let corrupt = |e: Error| Error::corruption(format!("core head record: {e}"));
        let mut r = Reader::new(b, "core head record");
        let version = r.uint().map_err(corrupt)?;
        if version != 1 {
            return Err(Error::corruption(format!(
                "unknown head record version {version}"
            )));
        }
        let length = r.uint().map_err(corrupt)?;
        let fork = r.uint().map_err(corrupt)?;
        let signature = r.optional_buffer().map_err(corrupt)?.map(<[u8]>::to_vec);
        let manifest = r.optional_buffer().map_err(corrupt)?.map(<[u8]>::to_vec);
        let n = r.array_len(34).map_err(corrupt)?;
        let roots = (0..n)
            .map(|_| {
                Ok(Node {
                    index: r.uint()?,
                    size: r.uint()?,
                    hash: r.fixed32()?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(corrupt)?;
        let contiguous = r.uint().map_err(corrupt)?;
        let n = r.array_len(2).map_err(corrupt)?;
        let truncations = (0..n)
            .map(|_| Ok((r.uint()?, r.uint()?)))
            .collect::<Result<Vec<_>>>()
            .map_err(corrupt)?;
        Ok(CoreRecord {
            head: Head {
                length,
                fork,
                roots,
                signature,
            },
            manifest,
            contiguous,
            truncations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_corruption() {
        let r = CoreRecord {
            head: Head {
                length: 5,
                fork: 1,
                roots: vec![
                    Node {
                        index: 3,
                        size: 10,
                        hash: [1; 32],
                    },
                    Node {
                        index: 8,
                        size: 2,
                        hash: [2; 32],
                    },
                ],
                signature: Some(vec![9; 68]),
            },
            manifest: Some(vec![1, 2, 3]),
            contiguous: 3,
            truncations: vec![(1, 2)],
        };
        assert_eq!(CoreRecord::decode(&r.encode()).unwrap(), r);
        let mut bad = r.encode();
        bad.truncate(bad.len() - 3);
        assert!(matches!(
            CoreRecord::decode(&bad),
            Err(Error::DataCorruption { .. })
        ));
    }
}
