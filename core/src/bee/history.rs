//! The log of a bee: every put and del in seq order (JS `createHistoryStream`). No tree walk;
//! one block per entry.

use super::{Bee, Entry};
use crate::error::Result;

/// Whether a log entry wrote or deleted its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A put.
    Put,
    /// A del.
    Del,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// put or del.
    pub kind: OpKind,
    /// The entry (value `None` for a del).
    pub entry: Entry,
}

/// Seq bounds of a history read. Negative values count back from the version, as in JS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Seqs greater than this.
    pub gt: Option<i64>,
    /// Seqs from this (default 1).
    pub gte: Option<i64>,
    /// Seqs below this (default the version).
    pub lt: Option<i64>,
    /// Seqs up to this.
    pub lte: Option<i64>,
    /// Newest first.
    pub reverse: bool,
    /// At most this many.
    pub limit: Option<usize>,
}

impl HistoryOptions {
    /// `[start, end)` of seqs for a bee at `version` (JS `gte()`/`lt()` of HistoryIterator).
    pub fn seq_range(&self, version: u64) -> (u64, u64) {
        let v = version as i64;
        let rel = |x: i64| if x < 0 { x + v } else { x };
        let start = match (self.gt, self.gte) {
            (Some(gt), _) if gt != 0 => rel(gt) + 1,
            (_, Some(gte)) if gte != 0 => rel(gte),
            _ => 1,
        };
        let end = if self.lte == Some(0) || self.lt == Some(0) {
            0
        } else if let Some(lte) = self.lte {
            rel(lte) + 1
        } else {
            self.lt.map(rel).unwrap_or(v)
        };
        (start.max(0) as u64, end.clamp(0, v) as u64)
    }
}

impl Bee {
    /// Reads the log at the current version.
    pub async fn history(&self, opts: &HistoryOptions) -> Result<Vec<HistoryEntry>> {
        let (start, end) = opts.seq_range(self.version());
        let limit = opts.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let seqs: Box<dyn Iterator<Item = u64>> = if opts.reverse {
            Box::new((start.max(1)..end).rev())
        } else {
            Box::new(start.max(1)..end)
        };
        for seq in seqs {
            if out.len() >= limit {
                break;
            }
            out.push(self.history_entry(seq).await?);
        }
        Ok(out)
    }

    /// The log entry at `seq`.
    pub async fn history_entry(&self, seq: u64) -> Result<HistoryEntry> {
        let b = self.block(seq).await?;
        let kind = if b.is_deletion() {
            OpKind::Del
        } else {
            OpKind::Put
        };
        Ok(HistoryEntry {
            kind,
            entry: Entry {
                seq,
                key: b.key.clone(),
                value: b.value.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_ranges_follow_js() {
        let o = |gt, gte, lt, lte| HistoryOptions {
            gt,
            gte,
            lt,
            lte,
            ..Default::default()
        };
        assert_eq!(o(None, None, None, None).seq_range(10), (1, 10));
        assert_eq!(o(Some(3), None, None, None).seq_range(10), (4, 10));
        assert_eq!(o(None, Some(-3), None, None).seq_range(10), (7, 10));
        assert_eq!(o(None, None, Some(5), None).seq_range(10), (1, 5));
        assert_eq!(o(None, None, None, Some(5)).seq_range(10), (1, 6));
        assert_eq!(o(None, None, None, Some(-2)).seq_range(10), (1, 9));
        assert_eq!(o(None, None, Some(0), None).seq_range(10), (1, 0));
    }
}
