//! `/v1/search`: the query as typed (a last word that is a prefix, typos), its filters, and
//! its order: most relevant (BM25) or most recent first.

use std::collections::HashSet;

use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, Searcher, TantivyDocument, Term};

use super::newest::Newest;
use super::query::{decode_offset_cursor, matches_only_entries, SearchCursor};
use super::top_k::{Fresh, Recency};
use super::{tolerant, Filters, Index, Page, MAX_LIMIT};
use crate::error::{Error, Result};

/// How much a word written as in the query (its accents) adds, against the folded word's
/// BM25 score: enough to order equal matches, not to lift a weaker match over a better one.
const WRITTEN_BOOST: f32 = 0.5;

/// The order of search hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchSort {
    /// Most relevant first (BM25).
    #[default]
    Relevance,
    /// Newest first, in the merged feed's order.
    Recent,
}

/// How a search reads its text and orders its hits.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchOptions {
    /// The last word is a prefix (as is a word ending `q` in `*`).
    pub prefix: bool,
    pub sort: SearchSort,
    /// Each hit gets a snippet (see [`highlight`](super::highlight)).
    pub highlight: bool,
    /// With [`SearchSort::Relevance`], fresh entries' scores raised.
    pub recency: Option<Recency>,
}

impl Index {
    /// Full-text search with the feed's filters; the cursor is an offset. Words with a typo
    /// are matched after the exact matches (see [`tolerant`]).
    pub fn search(
        &self,
        text: &str,
        fl: &Filters,
        cursor: Option<&str>,
        limit: usize,
        opts: SearchOptions,
    ) -> Result<Page> {
        let limit = limit.clamp(1, MAX_LIMIT);
        // Characters, as the API description counts them (JSON Schema `maxLength`).
        if text.is_empty() {
            return Err(Error::BadRequest("q must not be empty".into()));
        }
        if text.chars().count() > 1024 {
            return Err(Error::BadRequest("q is longer than 1024 characters".into()));
        }
        let cursor = cursor.map(decode_offset_cursor).transpose()?;
        let offset = cursor.map_or(0, |c| c.offset);
        // The clock recency is weighed with: the first page's, on every page.
        let now = cursor
            .and_then(|c| c.now)
            .unwrap_or_else(|| i64::try_from(apiary_core::tid::now_micros()).unwrap_or(i64::MAX));
        // A later page reads the generation its first page read, while it is kept.
        let searcher = cursor
            .and_then(|c| c.generation)
            .and_then(|g| self.pinned.get(g))
            .unwrap_or_else(|| self.reader.searcher());
        let parsed = self.parse(&searcher, text, opts.prefix);
        // When the words as typed do not fill the page, other forms of them, then words with
        // typos (each tier after the one before). Made only when needed: each stems the
        // words in every language, or runs automata over the term dictionaries.
        let stem_tier = || {
            let stems = super::analyzer::query_stems(text);
            tolerant::stem_tolerant(parsed.as_ref(), self.f.text, &stems)
        };
        let typo_tier = || tolerant::typo_tolerant(&searcher, parsed.as_ref(), self.f.text);
        let tiers: [&dyn Fn() -> Option<Box<dyn Query>>; 2] = [&stem_tier, &typo_tier];
        let written = self.written_boost(text);
        // Words of the text field only match entries: then the `kind` clause (every
        // document's postings) is left out, and a query without filters is searched alone,
        // which lets tantivy skip blocks that cannot make the top (block-max WAND) instead of
        // scoring every match of a common word.
        let entries_only = matches_only_entries(parsed.as_ref(), self.f.text);
        let mut clauses = self.filter_clauses_from(fl, None, None, entries_only);
        let q: Box<dyn Query> = if clauses.is_empty() && written.is_none() {
            match super::terms_and::TermsAnd::of(parsed.as_ref()) {
                Some(and) => Box::new(and),
                None => parsed.box_clone(),
            }
        } else {
            clauses.push((Occur::Must, parsed.box_clone()));
            clauses.extend(written.as_ref().map(|w| (Occur::Should, w.box_clone())));
            Box::new(BooleanQuery::new(clauses))
        };
        let want = offset + limit + 1;
        let mut hits = self.hits(&searcher, &*q, want, opts, now)?;
        for tier in tiers {
            if hits.len() >= want {
                break;
            }
            let Some(tier) = tier() else {
                continue;
            };
            // Fewer matches than asked: all of them are here, and this tier's follow them,
            // scored below the last one before.
            let mut clauses = self.filter_clauses_from(fl, None, None, false);
            clauses.push((Occur::Must, tier));
            clauses.extend(written.as_ref().map(|w| (Occur::Should, w.box_clone())));
            let q = BooleanQuery::new(clauses);
            let before: HashSet<DocAddress> = hits.iter().map(|(_, a)| *a).collect();
            let floor = hits.last().and_then(|(s, _)| *s).map(|s| s * 0.999);
            let more = self.hits(&searcher, &q, want + before.len(), opts, now)?;
            let new = more.into_iter().filter(|(_, a)| !before.contains(a));
            hits.extend(
                new.map(|(s, a)| (s.map(|s| floor.map_or(s, |f| s.min(f))), a))
                    .take(want.saturating_sub(before.len())),
            );
        }
        let more = hits.len() > offset + limit;
        let mut entries = Vec::with_capacity(limit);
        for (score, addr) in hits.into_iter().skip(offset).take(limit) {
            let d: TantivyDocument = searcher.doc(addr)?;
            let mut e = self.to_entry(d);
            e.score = score;
            entries.push(e);
        }
        if opts.highlight {
            let (q, prefix) = tolerant::prefix_of(text, opts.prefix);
            let marker = super::highlight::Marker::of(q, prefix);
            for e in &mut entries {
                // The stored value was checked when it was indexed; one that no longer
                // parses just gets no snippet.
                if let Ok(v) = serde_json::from_str(e.value.get()) {
                    e.snippet = super::highlight::snippet(&crate::extract::extract(&v), &marker);
                }
            }
        }
        let cursor = more.then(|| {
            let generation = self.pinned.pin(&searcher);
            SearchCursor::encode(offset + limit, now, generation)
        });
        Ok(Page { entries, cursor })
    }

    /// The query of `text`: tantivy's syntax, read leniently (what people type into a search
    /// box — an unclosed quote or bracket, a `word:` that is no field — is searched as far as
    /// it parses, not refused), with the last word as a prefix if asked.
    fn parse(&self, searcher: &Searcher, text: &str, prefix: bool) -> Box<dyn Query> {
        let parser = super::analyzer::query_parser(&self.index, self.f.text);
        let (text, prefix) = tolerant::prefix_of(text, prefix);
        let last = prefix.then(|| tolerant::split_last_word(text)).flatten();
        let Some((rest, word)) = last else {
            return parser.parse_query_lenient(text).0;
        };
        let last = tolerant::prefix_clause(searcher, self.f.text, &word);
        if rest.trim().is_empty() {
            return last;
        }
        let (rest, _) = parser.parse_query_lenient(rest);
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, rest),
            (Occur::Must, last),
        ]))
    }

    /// A clause that adds to the score of entries writing the query's words as it does
    /// (`Amélie` above "Amelie"), when folding changed any of them.
    fn written_boost(&self, text: &str) -> Option<Box<dyn Query>> {
        let forms = super::analyzer::written_forms(text);
        if forms.is_empty() {
            return None;
        }
        let terms = forms
            .iter()
            .map(|w| {
                let t = Term::from_field_text(self.f.text, w);
                Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn Query>
            })
            .collect();
        Some(Box::new(BoostQuery::new(
            Box::new(BooleanQuery::union(terms)),
            WRITTEN_BOOST,
        )))
    }

    /// The first `k` matches of `q` in the order asked, with their scores (none when newest
    /// first).
    fn hits(
        &self,
        searcher: &Searcher,
        q: &dyn Query,
        k: usize,
        opts: SearchOptions,
        now: i64,
    ) -> Result<Vec<(Option<f32>, DocAddress)>> {
        Ok(match opts.sort {
            SearchSort::Relevance => {
                let fresh = opts
                    .recency
                    .filter(|r| r.weight > 0.0)
                    .map(|recency| Fresh {
                        recency,
                        now,
                        columns: &self.sort_columns,
                    });
                super::top_k::top_k(searcher, q, k, fresh.as_ref())?
                    .into_iter()
                    .map(|(s, a)| (Some(s), a))
                    .collect()
            }
            SearchSort::Recent => {
                let newest = Newest {
                    limit: k,
                    columns: &self.sort_columns,
                };
                searcher
                    .search(q, &newest)?
                    .into_iter()
                    .map(|(_, a)| (None, a))
                    .collect()
            }
        })
    }
}
