//! The two page formats of the store. A page groups neighbouring blocks or tree nodes under
//! one sled key, so that an append of 1000 blocks writes about 125 sled values instead of
//! 3000 (sled's per-insert cost was most of the writer's CPU and a third of a reader's).
//!
//! Block page, blocks `16·p .. 16·p + 16` (all integers little-endian):
//! ```text
//! u16 present · u16 external · u32 end[n] · data
//! ```
//! Bit `s` of `present` says slot `s` holds a block. A present block with its bit set in
//! `external` is stored under its own key (it is larger than [`INLINE_MAX`]); the others are
//! inline: `n` is their count, `end[i]` the end offset of the i-th inline block in `data`
//! (cumulative, so block i is `data[end[i-1]..end[i]]`).
//!
//! Node page, tree nodes `32·p .. 32·p + 32`: `u32 present · 32 × (u64 size · hash[32])`,
//! a fixed 1284 bytes; absent slots are zeros.

use crate::error::{Error, Result};
use crate::merkle::Node;

/// Blocks per block page.
pub(crate) const BLOCK_SLOTS: u64 = 16;
/// Nodes per node page.
pub(crate) const NODE_SLOTS: u64 = 32;
/// Larger blocks get their own sled key, so a page stays small (sled rewrites whole
/// leaves of its tree, which hold up to 17 values).
pub(crate) const INLINE_MAX: usize = 1024;

const NODE_BYTES: usize = 40;
const NODE_PAGE_BYTES: usize = 4 + NODE_SLOTS as usize * NODE_BYTES;

/// One slot of a block page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The block bytes.
    Inline(Vec<u8>),
    /// Stored under its own key.
    External,
}

/// A decoded block page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockPage {
    pub(crate) slots: [Option<Slot>; BLOCK_SLOTS as usize],
}

impl BlockPage {
    /// Whether every slot is present.
    pub(crate) fn is_full(&self) -> bool {
        self.slots.iter().all(Option::is_some)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut present = 0u16;
        let mut external = 0u16;
        let mut ends = Vec::new();
        let mut data = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                None => {}
                Some(Slot::External) => {
                    present |= 1 << i;
                    external |= 1 << i;
                }
                Some(Slot::Inline(b)) => {
                    present |= 1 << i;
                    data.extend_from_slice(b);
                    ends.push(data.len() as u32);
                }
            }
        }
        let mut out = Vec::with_capacity(4 + 4 * ends.len() + data.len());
        out.extend_from_slice(&present.to_le_bytes());
        out.extend_from_slice(&external.to_le_bytes());
        for e in ends {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&data);
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let view = PageView::new(b)?;
        let mut page = BlockPage::default();
        for (slot, out) in page.slots.iter_mut().enumerate() {
            *out = view.slot(slot)?;
        }
        Ok(page)
    }
}

/// Random access into an encoded block page without decoding the other blocks.
pub(crate) struct PageView<'a> {
    present: u16,
    external: u16,
    ends: &'a [u8],
    data: &'a [u8],
}

impl<'a> PageView<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Result<Self> {
        let bad = || Error::corruption("block page too short");
        let present = u16::from_le_bytes([*b.first().ok_or_else(bad)?, *b.get(1).ok_or_else(bad)?]);
        let external = u16::from_le_bytes([*b.get(2).ok_or_else(bad)?, *b.get(3).ok_or_else(bad)?]);
        if external & !present != 0 {
            return Err(Error::corruption("block page: external slot not present"));
        }
        let n = (present & !external).count_ones() as usize;
        let ends = b.get(4..4 + 4 * n).ok_or_else(bad)?;
        let data = b.get(4 + 4 * n..).ok_or_else(bad)?;
        Ok(PageView {
            present,
            external,
            ends,
            data,
        })
    }

    fn end(&self, i: usize) -> Result<usize> {
        self.ends
            .get(4 * i..4 * i + 4)
            .and_then(|e| e.try_into().ok())
            .map(|e| u32::from_le_bytes(e) as usize)
            .ok_or_else(|| Error::corruption("block page: bad offset table"))
    }

    /// Whether slot `slot` holds a block.
    pub(crate) fn has(&self, slot: usize) -> bool {
        slot < 16 && self.present & (1 << slot) != 0
    }

    /// Number of present slots.
    pub(crate) fn count(&self) -> u32 {
        self.present.count_ones()
    }

    /// The block in `slot`, if present.
    pub(crate) fn slot(&self, slot: usize) -> Result<Option<Slot>> {
        if !self.has(slot) {
            return Ok(None);
        }
        if self.external & (1 << slot) != 0 {
            return Ok(Some(Slot::External));
        }
        let inline = self.present & !self.external;
        let i = (inline & ((1u16 << slot) - 1)).count_ones() as usize;
        let start = if i == 0 { 0 } else { self.end(i - 1)? };
        let end = self.end(i)?;
        let bytes = self
            .data
            .get(start..end)
            .ok_or_else(|| Error::corruption("block page: block outside the page"))?;
        Ok(Some(Slot::Inline(bytes.to_vec())))
    }
}

/// A node page (kept encoded: it is fixed-size, so reads and writes go in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodePage(Vec<u8>);

impl Default for NodePage {
    fn default() -> Self {
        NodePage(vec![0; NODE_PAGE_BYTES])
    }
}

impl NodePage {
    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        Ok(NodePage(check_node_page(b)?.to_vec()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn present(&self) -> u32 {
        read_present(&self.0)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.present() == u32::MAX
    }

    pub(crate) fn set(&mut self, n: &Node) {
        let slot = (n.index % NODE_SLOTS) as usize;
        let p = self.present() | (1 << slot);
        self.0[..4].copy_from_slice(&p.to_le_bytes());
        let at = 4 + slot * NODE_BYTES;
        self.0[at..at + 8].copy_from_slice(&n.size.to_le_bytes());
        self.0[at + 8..at + NODE_BYTES].copy_from_slice(&n.hash);
    }

    pub(crate) fn clear(&mut self, slot: usize) {
        let p = self.present() & !(1 << slot);
        self.0[..4].copy_from_slice(&p.to_le_bytes());
        let at = 4 + slot * NODE_BYTES;
        self.0[at..at + NODE_BYTES].fill(0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.present() == 0
    }

    pub(crate) fn get(&self, index: u64) -> Option<Node> {
        node_in(&self.0, index)
    }
}

/// `b` if it has the size of a node page.
pub(crate) fn check_node_page(b: &[u8]) -> Result<&[u8]> {
    if b.len() != NODE_PAGE_BYTES {
        return Err(Error::corruption(format!(
            "node page of {} bytes, expected {NODE_PAGE_BYTES}",
            b.len()
        )));
    }
    Ok(b)
}

fn read_present(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|p| p.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// Node `index` from an encoded node page (`None` if absent or the page is short).
pub(crate) fn node_in(page: &[u8], index: u64) -> Option<Node> {
    let slot = (index % NODE_SLOTS) as usize;
    if read_present(page) & (1 << slot) == 0 {
        return None;
    }
    let at = 4 + slot * NODE_BYTES;
    let b = page.get(at..at + NODE_BYTES)?;
    let size = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let hash = b.get(8..)?.try_into().ok()?;
    Some(Node { index, size, hash })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot() -> impl Strategy<Value = Option<Slot>> {
        prop_oneof![
            Just(None),
            Just(Some(Slot::External)),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Some(Slot::Inline(b))),
        ]
    }

    proptest! {
        #[test]
        fn block_page_roundtrip(slots in proptest::collection::vec(slot(), 16)) {
            let mut page = BlockPage::default();
            for (i, s) in slots.into_iter().enumerate() {
                page.slots[i] = s;
            }
            let enc = page.encode();
            prop_assert_eq!(BlockPage::decode(&enc).unwrap(), page.clone());
            let view = PageView::new(&enc).unwrap();
            for i in 0..16 {
                prop_assert_eq!(view.slot(i).unwrap(), page.slots[i].clone());
            }
        }

        #[test]
        fn block_page_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = BlockPage::decode(&b);
        }

        #[test]
        fn node_page_set_get(idx in proptest::collection::vec(0u64..32, 0..40), size in any::<u64>()) {
            let mut p = NodePage::default();
            for i in &idx {
                p.set(&Node { index: 64 + i, size: size ^ i, hash: [*i as u8; 32] });
            }
            let p = NodePage::decode(p.as_bytes()).unwrap();
            for i in 0..32u64 {
                let got = p.get(64 + i);
                prop_assert_eq!(got.is_some(), idx.contains(&i));
                if let Some(n) = got {
                    prop_assert_eq!(n, Node { index: 64 + i, size: size ^ i, hash: [i as u8; 32] });
                }
            }
        }
    }

    #[test]
    fn corrupt_pages_are_errors() {
        assert!(BlockPage::decode(&[1]).is_err());
        // One inline block claimed, offset table says it ends past the data.
        assert!(BlockPage::decode(&[1, 0, 0, 0, 9, 0, 0, 0, 1]).is_err());
        // External without present.
        assert!(BlockPage::decode(&[0, 0, 1, 0]).is_err());
        assert!(NodePage::decode(&[0; 10]).is_err());
    }
}
