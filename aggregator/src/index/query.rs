//! Reads: the merged feed (newest first, cursor), BM25 search, single entries.

use std::collections::{hash_map, HashMap};
use std::ops::Bound;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::{DocAddress, TantivyDocument, Term};

use super::stored::doc_into_entry;
use super::{Filters, Index, Page, MAX_LIMIT};
use crate::api::Entry;
use crate::error::{Error, Result};

/// A feed row: its sortAt, its id if it was read already (only the last row's is needed, for
/// the cursor), its stored document.
type FeedRow = (i64, Option<String>, TantivyDocument);

impl Index {
    /// Filter clauses, with sortAt at most `upper` and at least `lower` (a time window).
    /// `entries_only`: the caller adds a clause that only entries match (time buckets), so
    /// the `kind` clause, whose postings hold every document, is left out.
    pub(super) fn filter_clauses_from(
        &self,
        fl: &Filters,
        upper: Option<i64>,
        lower: Option<i64>,
        entries_only: bool,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let mut c: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !entries_only {
            c.push((Occur::Must, term(self.f.kind, "entry")));
        }
        if let Some(feed) = &fl.feed {
            c.push((Occur::Must, term(self.f.feed, feed)));
        }
        if let Some(t) = &fl.typ {
            c.push((Occur::Must, term(self.f.typ, t)));
        }
        if let Some(t) = &fl.tag {
            c.push((Occur::Must, term(self.f.tag, t)));
        }
        let lo = match (fl.since, lower) {
            (Some(a), Some(b)) => Bound::Included(a.max(b)),
            (Some(a), None) | (None, Some(a)) => Bound::Included(a),
            (None, None) => Bound::Unbounded,
        };
        let hi = match (fl.until, upper) {
            (Some(u), Some(c)) if c < u => Bound::Included(c),
            (Some(u), _) => Bound::Excluded(u),
            (None, Some(c)) => Bound::Included(c),
            (None, None) => Bound::Unbounded,
        };
        if !matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
            c.push((
                Occur::Must,
                Box::new(RangeQuery::new_i64_bounds("sort_at".into(), lo, hi)),
            ));
        }
        c
    }

    /// The merged feed, newest first (by sortAt, then a hash of the id, then the id: see
    /// [`newest`](super::newest)).
    ///
    /// Sorting every match by sortAt costs a scan of all of them, so pages are looked for in
    /// growing time windows below the cursor (a minute, ten, an hour, a day, a month, a year,
    /// all): the
    /// newest pages, the ones read most, only touch recent entries. A window is asked of the
    /// index as its [`time_buckets`](super::time_buckets) (a range over the sortAt column
    /// reads all of it); the all-time window, and a window whose edges hold too many entries
    /// to skip, as the exact range.
    pub fn feed(&self, fl: &Filters, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let after = cursor.map(decode_feed_cursor).transpose()?;
        let searcher = self.reader.searcher();
        let upper = after.as_ref().map(|a| a.0);
        // The windows go down from the newest time a row may have: the cursor's, or the newest
        // indexed, or just before `until`.
        let top = upper
            .unwrap_or_else(|| self.newest.load(std::sync::atomic::Ordering::Relaxed))
            .min(fl.until.map_or(i64::MAX, |u| u.saturating_sub(1)));
        const MINUTE: i64 = 60_000_000;
        const HOUR: i64 = 60 * MINUTE;
        // Each row of a window costs a read of its sortAt (at 1M entries over two days, an
        // hour held 21k rows: most of a page's CPU), and an empty window a few term lookups:
        // start small.
        for window in [
            Some(MINUTE),
            Some(10 * MINUTE),
            Some(HOUR),
            Some(24 * HOUR),
            Some(30 * 24 * HOUR),
            Some(366 * 24 * HOUR),
            None,
        ] {
            let lower = window.map(|w| top.saturating_sub(w));
            let by_buckets = match (lower, fl.since) {
                (None, None) => None,
                _ => {
                    // Nothing above `top` is indexed (it is the cursor or the newest sortAt).
                    let lo = lower.unwrap_or(i64::MIN).max(fl.since.unwrap_or(i64::MIN));
                    let hi = top.min(fl.until.map_or(i64::MAX, |u| u.saturating_sub(1)));
                    // since/until are in [lo, hi], kept on the rows: a range clause for them
                    // would read the whole sortAt column again.
                    let untimed = Filters {
                        since: None,
                        until: None,
                        ..fl.clone()
                    };
                    let mut clauses = self.filter_clauses_from(&untimed, None, None, true);
                    // A union of term postings: a TermSetQuery builds an automaton and a
                    // bitset of the whole segment for each query (13% of the CPU).
                    let buckets: Vec<Box<dyn Query>> = super::time_buckets::cover(lo, hi)
                        .into_iter()
                        .map(|t| {
                            Box::new(TermQuery::new(
                                Term::from_field_u64(self.f.time, t),
                                IndexRecordOption::Basic,
                            )) as Box<dyn Query>
                        })
                        .collect();
                    clauses.push((Occur::Must, Box::new(BooleanQuery::union(buckets))));
                    let q = BooleanQuery::new(clauses);
                    self.feed_rows(&searcher, &q, (lo, hi), after.as_ref(), limit, false)?
                }
            };
            let (rows, more) = match by_buckets {
                Some(found) => found,
                None => {
                    let q = BooleanQuery::new(self.filter_clauses_from(fl, upper, lower, false));
                    let bounds = (i64::MIN, i64::MAX);
                    self.feed_rows(&searcher, &q, bounds, after.as_ref(), limit, true)?
                        .unwrap_or_default()
                }
            };
            // Done when this window has more than a page, or it already reaches `since`.
            let covers_all = match (lower, fl.since) {
                (None, _) => true,
                (Some(l), Some(s)) => l <= s,
                (Some(_), None) => false,
            };
            if more || covers_all {
                let cursor = if more {
                    rows.last().map(|(s, id, d)| {
                        encode_feed_cursor(*s, id.as_deref().unwrap_or_else(|| self.id_str(d)))
                    })
                } else {
                    None
                };
                let entries = rows.into_iter().map(|(_, _, d)| self.to_entry(d)).collect();
                return Ok(Page { entries, cursor });
            }
        }
        Ok(Page {
            entries: Vec::new(),
            cursor: None,
        })
    }

    /// Up to `limit` rows after the cursor with sortAt within `bounds` (inclusive), in the
    /// feed's order (see [`newest`](super::newest)), and whether more follow. `q` may match
    /// more than the bounds (time buckets cover a little more than their window): those rows
    /// are skipped by their sortAt. Rows are placed by their `(sortAt, tiebreak)` key from
    /// fast fields; a stored document is read for the rows of the page, and for the id of a
    /// row whose key equals the cursor's or another row's. Without `exact`, `None` when that
    /// took too many rows (the caller asks the exact range instead); with it, the page found
    /// within 20,000 rows.
    fn feed_rows(
        &self,
        searcher: &tantivy::Searcher,
        q: &BooleanQuery,
        bounds: (i64, i64),
        after: Option<&(i64, String)>,
        limit: usize,
        exact: bool,
    ) -> Result<Option<(Vec<FeedRow>, bool)>> {
        use super::newest::{key, tiebreak, Key, Newest};
        const MAX_FETCH: usize = 20_000;
        let (lo, hi) = bounds;
        let after = after.map(|(s, id)| (key(*s, tiebreak(id)), id.as_str()));
        // Stored documents read so far (for an id), kept across fetch rounds and for the page.
        let mut read: HashMap<DocAddress, (String, TantivyDocument)> = HashMap::new();
        let mut fetch = limit + 8;
        loop {
            let hits: Vec<(Key, DocAddress)> = searcher.search(
                q,
                &Newest {
                    limit: fetch,
                    columns: &self.sort_columns,
                },
            )?;
            let exhausted = hits.len() < fetch;
            // In the order of the hits (their keys, first first); ids only where needed.
            let mut rows: Vec<(Key, DocAddress)> = Vec::with_capacity(limit + 1);
            for &(k, addr) in &hits {
                if k.0 < lo || k.0 > hi {
                    continue;
                }
                if let Some((ak, aid)) = &after {
                    if k > *ak {
                        continue; // before the cursor
                    }
                    if k == *ak && self.read_id(searcher, &mut read, addr)? <= *aid {
                        continue;
                    }
                }
                rows.push((k, addr));
            }
            // Equal keys (a tiebreak collision): by id.
            for group in rows.chunk_by_mut(|a, b| a.0 == b.0) {
                if group.len() > 1 {
                    for &(_, addr) in group.iter() {
                        self.read_id(searcher, &mut read, addr)?;
                    }
                    let id = |r: &(Key, DocAddress)| read.get(&r.1).map(|known| known.0.as_str());
                    group.sort_by(|a, b| id(a).cmp(&id(b)));
                }
            }
            // Unfetched hits come at most where the last fetched one does, and may equal its
            // key: a full page holds when the fetch went past its last row's key (rows of
            // that key were all fetched, so their order by id is the whole order).
            let past_page = match (hits.last(), rows.get(limit.saturating_sub(1))) {
                (Some((oldest, _)), Some((page_last, _))) => oldest < page_last,
                _ => false,
            };
            if (rows.len() > limit && past_page) || exhausted || (exact && fetch >= MAX_FETCH) {
                let more = rows.len() > limit;
                rows.truncate(limit);
                let mut page = Vec::with_capacity(rows.len());
                for (k, addr) in rows {
                    let (id, d) = match read.remove(&addr) {
                        Some((id, d)) => (Some(id), d),
                        None => (None, searcher.doc(addr)?),
                    };
                    page.push((k.0, id, d));
                }
                return Ok(Some((page, more)));
            }
            if fetch >= MAX_FETCH {
                return Ok(None);
            }
            fetch *= 4;
        }
    }

    /// The id of the row at `addr`, its stored document read once and kept in `read`.
    fn read_id<'r>(
        &self,
        searcher: &tantivy::Searcher,
        read: &'r mut HashMap<DocAddress, (String, TantivyDocument)>,
        addr: DocAddress,
    ) -> Result<&'r str> {
        let known = match read.entry(addr) {
            hash_map::Entry::Occupied(o) => o.into_mut(),
            hash_map::Entry::Vacant(v) => {
                let d: TantivyDocument = searcher.doc(addr)?;
                v.insert((self.id_of(&d), d))
            }
        };
        Ok(known.0.as_str())
    }

    fn id_of(&self, d: &TantivyDocument) -> String {
        self.id_str(d).to_owned()
    }

    fn id_str<'d>(&self, d: &'d TantivyDocument) -> &'d str {
        d.get_first(self.f.id)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    /// One entry by feed and key.
    pub fn entry(&self, feed: &str, key: &[u8]) -> Result<Option<Entry>> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.id, &entry_id(feed, key)),
            IndexRecordOption::Basic,
        );
        let hits = searcher.search(&q, &TopDocs::with_limit(1))?;
        match hits.first() {
            Some((_, addr)) => Ok(Some(self.to_entry(searcher.doc(*addr)?))),
            None => Ok(None),
        }
    }

    /// The entry of a stored document read for it.
    pub(super) fn to_entry(&self, d: TantivyDocument) -> Entry {
        doc_into_entry(&self.f, d)
    }
}

/// Whether a parsed search can only match entries: it needs a word or phrase of `text` (which
/// checkpoint documents have none of). A `field:` query, a range, a boost or anything else
/// the parser makes is not known to, so it keeps the `kind` clause.
pub(super) fn matches_only_entries(q: &dyn Query, text: Field) -> bool {
    if let Some(t) = q.downcast_ref::<TermQuery>() {
        return t.term().field() == text;
    }
    if let Some(p) = q.downcast_ref::<PhraseQuery>() {
        return p.field() == text;
    }
    if let Some(b) = q.downcast_ref::<BooleanQuery>() {
        let sub = |o: Occur| b.clauses().iter().filter(move |(c, _)| *c == o);
        // Must: one of them narrows to entries. Should alone: each of them must.
        if sub(Occur::Must).next().is_some() {
            return sub(Occur::Must).any(|(_, q)| matches_only_entries(q.as_ref(), text));
        }
        return sub(Occur::Should).next().is_some()
            && sub(Occur::Should).all(|(_, q)| matches_only_entries(q.as_ref(), text));
    }
    false
}

fn term(field: Field, v: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, v),
        IndexRecordOption::Basic,
    ))
}

/// The document id of an entry: `feed/hex(key)` (keys may be any bytes).
pub fn entry_id(feed: &str, key: &[u8]) -> String {
    format!("{feed}/{}", hex::encode(key))
}

fn encode_feed_cursor(sort_at: i64, id: &str) -> String {
    hex::encode(format!("f{sort_at}|{id}"))
}

fn bad_cursor() -> Error {
    Error::BadRequest("bad cursor: pass back the cursor of the previous page unchanged".into())
}

fn decode_feed_cursor(c: &str) -> Result<(i64, String)> {
    let raw = hex::decode(c).map_err(|_| bad_cursor())?;
    let s = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let rest = s.strip_prefix('f').ok_or_else(bad_cursor)?;
    let (a, id) = rest.split_once('|').ok_or_else(bad_cursor)?;
    Ok((a.parse().map_err(|_| bad_cursor())?, id.to_owned()))
}

pub(super) fn decode_offset_cursor(c: &str) -> Result<SearchCursor> {
    let raw = hex::decode(c).map_err(|_| bad_cursor())?;
    let s = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let rest = s.strip_prefix('o').ok_or_else(bad_cursor)?;
    // `o{offset}` (cursors of earlier versions), `o{offset}@{now}` or `o{offset}@{now}g{gen}`.
    let number = |t: &str| t.parse::<u64>().map_err(|_| bad_cursor());
    let (offset, now, generation) = match rest.split_once('@') {
        Some((o, tail)) => match tail.split_once('g') {
            Some((n, g)) => (o, Some(number(n)?), Some(number(g)?)),
            None => (o, Some(number(tail)?), None),
        },
        None => (rest, None, None),
    };
    let offset: usize = offset.parse().map_err(|_| bad_cursor())?;
    if offset > 10_000 {
        return Err(Error::BadRequest(
            "search pages stop at 10000 results; refine the query".into(),
        ));
    }
    let now = now
        .map(|n| i64::try_from(n).map_err(|_| bad_cursor()))
        .transpose()?;
    Ok(SearchCursor {
        offset,
        now,
        generation,
    })
}

/// Where a search's next page starts, and the clock (µs) its first page weighed recency
/// with: every page of one search scores with that clock, so entries whose boosts differ by
/// less than a float's precision cannot swap places between pages (one shown twice, its
/// neighbour never); and the searcher generation it read (see `pinned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SearchCursor {
    pub offset: usize,
    pub now: Option<i64>,
    pub generation: Option<u64>,
}

impl SearchCursor {
    /// The opaque text of the cursor (hex of `o{offset}@{now}g{generation}`).
    pub(super) fn encode(offset: usize, now: i64, generation: u64) -> String {
        hex::encode(format!("o{offset}@{now}g{generation}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_words_of_the_text_leave_the_kind_clause_out() {
        let (schema, f) = super::super::schema();
        let index = tantivy::Index::create_in_ram(schema);
        super::super::analyzer::register(&index);
        let parser = super::super::analyzer::query_parser(&index, f.text);
        for (q, want) in [
            ("matrix", true),
            ("the matrix", true),
            ("\"the matrix\"", true),
            ("matrix OR stalker", true),
            ("matrix -stalker", true),
            ("matrix kind:cp", true),
            ("kind:cp", false),
            ("feed:abc OR matrix", false),
            ("-matrix", false),
            ("*", false),
            ("sort_at:[0 TO 10]", false),
            ("matrix^2", false),
        ] {
            let (parsed, _) = parser.parse_query_lenient(q);
            assert_eq!(matches_only_entries(parsed.as_ref(), f.text), want, "{q}");
        }
    }

    #[test]
    fn feed_cursors_round_trip() {
        let id = entry_id(&"y".repeat(52), b"key|with/odd\xffbytes");
        for sort_at in [0, 1, -5, 1_732_960_000_000_000, i64::MIN, i64::MAX] {
            let c = encode_feed_cursor(sort_at, &id);
            assert_eq!(decode_feed_cursor(&c).unwrap(), (sort_at, id.clone()));
        }
        assert_eq!(
            decode_feed_cursor(&encode_feed_cursor(7, "")).unwrap(),
            (7, String::new())
        );
    }

    #[test]
    fn cursors_not_made_here_are_bad_requests() {
        for c in [
            String::new(),
            "zz".into(),
            hex::encode("o20"),
            hex::encode("f|x"),
            hex::encode("fx|x"),
            hex::encode("f1x"),
            hex::encode([b'f', b'1', b'|', 0xff]),
        ] {
            assert!(
                matches!(decode_feed_cursor(&c), Err(Error::BadRequest(_))),
                "{c}"
            );
        }
        let cur = |offset, now, generation| SearchCursor {
            offset,
            now,
            generation,
        };
        assert_eq!(
            decode_offset_cursor(&hex::encode("o20")).unwrap(),
            cur(20, None, None)
        );
        assert_eq!(
            decode_offset_cursor(&hex::encode("o10000")).unwrap(),
            cur(10_000, None, None)
        );
        assert_eq!(
            decode_offset_cursor(&hex::encode("o40@1764000000000000")).unwrap(),
            cur(40, Some(1_764_000_000_000_000), None)
        );
        assert_eq!(
            decode_offset_cursor(&SearchCursor::encode(40, 1_764_000_000_000_000, 7)).unwrap(),
            cur(40, Some(1_764_000_000_000_000), Some(7))
        );
        for c in [
            hex::encode("o10001"),
            hex::encode("o-1"),
            hex::encode("o20@"),
            hex::encode("o20@-5"),
            hex::encode("o20@99999999999999999999"),
            hex::encode("o20@1@2"),
            hex::encode("o20@1g"),
            hex::encode("o20@1g-1"),
            hex::encode("o20@g1"),
            hex::encode("o20g1"),
            hex::encode("o@1"),
            hex::encode("o"),
            hex::encode("f1|x"),
            "6f3".into(),
        ] {
            assert!(
                matches!(decode_offset_cursor(&c), Err(Error::BadRequest(_))),
                "{c}"
            );
        }
    }
}
