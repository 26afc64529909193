//! What a search box on a phone needs beyond exact words: the last word as a prefix while
//! typing, other forms of the words typed, and words with a typo or two.
//!
//! - **Prefix** (`prefix=true`, or a `*` at the end of `q`): the last word matches the terms
//!   it begins (`stal` → "stalker"), the 50 in the most entries, its exact form ranked above.
//! - **Typos**: in a query of plain words (no phrase, `OR` or `-`), a word of 5 to 8
//!   characters may differ from the text's word by one edit (Damerau: a swap of two letters is
//!   one), and of 9 or more by two; hashtags and mentions stay exact. Typo matches are only looked for when the exact matches do
//!   not fill the page, and always come after them: `stalkr` finds "Stalker", and `matrix`
//!   ranks "The Matrix" above "Matrox" however many times the latter says it.
//! - **Other forms** (stems in any language, [`stem_tolerant`]): looked for in the same way,
//!   before typos, so "cats" ranks the entries that say "cats" above the one that says "cat".
//!
//! A prefix and a word with typos each stand for the terms of the dictionary they match
//! (a range of it, or a Levenshtein automaton run over it), the 50 in the most entries, as a
//! union of term queries beside the word itself counted double: BM25 scores them, and
//! tantivy's block-max WAND prunes them (an automaton query scored every entry of every
//! term it matched).

use std::collections::HashMap;
use std::sync::LazyLock;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};

use tantivy::schema::{Field, IndexRecordOption};
use tantivy::termdict::TermStreamer;
use tantivy::{Searcher, Term};

/// Edits allowed in a word of `chars` characters.
fn edits(chars: usize) -> u8 {
    match chars {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// Edits allowed in a query term. A hashtag or mention is exact: `#rust` is not `rust`
/// with a typo.
pub(super) fn edits_for(term: &str) -> usize {
    if term.starts_with(['#', '@']) {
        0
    } else {
        usize::from(edits(term.chars().count()))
    }
}

/// Words of a query that may have a typo: each is an automaton run over the whole term
/// dictionary, and a query of 1024 characters could hold a hundred.
const MAX_TOLERANT_WORDS: usize = 8;

/// How much more an exact word counts than one matched by prefix or with a typo.
const EXACT_BOOST: f32 = 2.0;

/// `q` without its prefix marker, and whether its last word is a prefix.
pub(super) fn prefix_of(q: &str, asked: bool) -> (&str, bool) {
    let trimmed = q.trim_end();
    match trimmed.strip_suffix('*') {
        Some(rest) if !rest.ends_with(char::is_whitespace) && !rest.is_empty() => (rest, true),
        _ => (q, asked),
    }
}

/// Splits off the last word of `q` if it is one term of `text` (not a phrase, operator or
/// CJK run, which stay with the rest): the rest of the query, and the last word's term.
pub(super) fn split_last_word(q: &str) -> Option<(&str, String)> {
    let trimmed = q.trim_end();
    let start = trimmed
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = trimmed.get(start..)?;
    if word.is_empty() || word.contains(|c: char| "\"()[]{}^:+-~*".contains(c)) {
        return None;
    }
    if matches!(word, "AND" | "OR" | "NOT") {
        return None;
    }
    let mut tokens = super::analyzer::query_terms(word);
    let term = tokens.pop()?;
    if !tokens.is_empty() {
        return None;
    }
    Some((trimmed.get(..start).unwrap_or_default(), term))
}

/// The most terms a prefix or a word with typos stands for (Elasticsearch's
/// `max_expansions` is 50 too): those in the most entries. A prefix of two or three letters
/// begins thousands of terms, and matching all of them read the postings of each (prefix p99
/// 32 ms at 1M entries); a common word's neighbours by one edit are dozens.
const MAX_EXPANSIONS: usize = 50;

/// The terms of `text` that `stream_of` finds in each segment's term dictionary, the
/// [`MAX_EXPANSIONS`] in the most entries (document frequencies summed over segments),
/// `word` itself left out.
fn top_terms<A, F>(searcher: &Searcher, text: Field, word: &str, stream_of: F) -> Vec<String>
where
    A: tantivy_fst::Automaton,
    A::State: Clone,
    F: for<'d> Fn(&'d tantivy::termdict::TermDictionary) -> Option<TermStreamer<'d, A>>,
{
    let mut freq: HashMap<Vec<u8>, u64> = HashMap::new();
    for reader in searcher.segment_readers() {
        let Ok(inverted) = reader.inverted_index(text) else {
            continue;
        };
        let Some(mut stream) = stream_of(inverted.terms()) else {
            continue;
        };
        while stream.advance() {
            *freq.entry(stream.key().to_vec()).or_default() += u64::from(stream.value().doc_freq);
        }
    }
    let mut terms: Vec<(Vec<u8>, u64)> = freq
        .into_iter()
        .filter(|(t, _)| t.as_slice() != word.as_bytes())
        .collect();
    terms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    terms
        .into_iter()
        .take(MAX_EXPANSIONS)
        .filter_map(|(t, _)| String::from_utf8(t).ok())
        .collect()
}

/// `word` (counted double) or any of `others`, a union of plain term queries: BM25 scores
/// each, and tantivy's block-max WAND prunes it (a `BoostQuery` on the word would hide its
/// term scorer and turn the pruning off: prefix p99 44 ms at 1M entries).
fn word_or(text: Field, word: &str, others: &[String]) -> Box<dyn Query> {
    let term = |t: &str| -> (Occur, Box<dyn Query>) {
        let q = TermQuery::new(Term::from_field_text(text, t), IndexRecordOption::WithFreqs);
        (Occur::Should, Box::new(q))
    };
    let mut clauses = vec![term(word), term(word)];
    clauses.extend(others.iter().map(|t| term(t)));
    Box::new(BooleanQuery::new(clauses))
}

/// A word that is a prefix: its exact form (counted double), or one of the
/// [`MAX_EXPANSIONS`] terms it begins that are in the most entries.
pub(super) fn prefix_clause(searcher: &Searcher, text: Field, word: &str) -> Box<dyn Query> {
    let begun = top_terms(searcher, text, word, |dict| {
        let end = prefix_end(word.as_bytes());
        let range = dict.range().ge(word.as_bytes());
        let range = match &end {
            Some(end) => range.lt(end),
            None => range,
        };
        range.into_stream().ok()
    });
    word_or(text, word, &begun)
}

/// The first byte string after every string that begins with `prefix` (`None`: there is
/// none, the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A Levenshtein automaton (with swaps of two letters as one edit) over term dictionaries.
struct Typos(levenshtein_automata::DFA);

impl tantivy_fst::Automaton for Typos {
    type State = u32;

    fn start(&self) -> u32 {
        self.0.initial_state()
    }

    fn is_match(&self, state: &u32) -> bool {
        matches!(
            self.0.distance(*state),
            levenshtein_automata::Distance::Exact(_)
        )
    }

    fn can_match(&self, state: &u32) -> bool {
        *state != levenshtein_automata::SINK_STATE
    }

    fn accept(&self, state: &u32, byte: u8) -> u32 {
        self.0.transition(*state, byte)
    }
}

/// The terms within `edits` of `word`, the [`MAX_EXPANSIONS`] in the most entries. Making a
/// builder costs milliseconds: one per distance, made once.
fn typo_terms(searcher: &Searcher, text: Field, word: &str, edits: u8) -> Vec<String> {
    use levenshtein_automata::LevenshteinAutomatonBuilder as Builder;
    static ONE: LazyLock<Builder> = LazyLock::new(|| Builder::new(1, true));
    static TWO: LazyLock<Builder> = LazyLock::new(|| Builder::new(2, true));
    let builder: &Builder = if edits >= 2 { &TWO } else { &ONE };
    top_terms(searcher, text, word, |dict| {
        dict.search(Typos(builder.build_dfa(word)))
            .into_stream()
            .ok()
    })
}

fn exact(term: Term) -> Box<dyn Query> {
    Box::new(BoostQuery::new(
        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
        EXACT_BOOST,
    ))
}

/// The words of a query of plain words of `text` (one word, or words all required), or `None`
/// for a query of another shape (phrases, `OR`, `-word`, other fields).
fn plain_words(parsed: &dyn Query, text: Field) -> Option<Vec<Term>> {
    let mut words: Vec<Term> = Vec::new();
    if let Some(t) = parsed.downcast_ref::<TermQuery>() {
        words.push(t.term().clone());
    } else if let Some(b) = parsed.downcast_ref::<BooleanQuery>() {
        for (occur, q) in b.clauses() {
            let t = q.downcast_ref::<TermQuery>()?;
            if *occur != Occur::Must {
                return None;
            }
            words.push(t.term().clone());
        }
    } else {
        return None;
    }
    words.iter().all(|t| t.field() == text).then_some(words)
}

/// The form of a query of words and phrases (all required) where each word may also be
/// another form of itself: one of its `stems` in any language (see
/// [`query_stems`](super::analyzer::query_stems)), the word itself boosted; a phrase, the
/// phrase of its words' stems in one language (`"мастер и маргарита"` finds «Мастера и
/// Маргариту»). `None` when nothing has another form or the query is of another shape.
pub(super) fn stem_tolerant(
    parsed: &dyn Query,
    text: Field,
    stems: &[(String, Vec<String>)],
) -> Option<Box<dyn Query>> {
    let parts: Vec<&dyn Query> = match parsed.downcast_ref::<BooleanQuery>() {
        Some(b) => b
            .clauses()
            .iter()
            .map(|(occur, q)| (*occur == Occur::Must).then_some(q.as_ref()))
            .collect::<Option<_>>()?,
        None => vec![parsed],
    };
    let mut any = false;
    let mut clauses = Vec::with_capacity(parts.len());
    for part in parts {
        let forms = if let Some(t) = part.downcast_ref::<TermQuery>() {
            if t.term().field() != text {
                return None;
            }
            word_forms(t.term(), stems)
        } else if let Some(p) = part.downcast_ref::<PhraseQuery>() {
            if p.field() != text {
                return None;
            }
            phrase_forms(p)
        } else {
            return None;
        };
        any |= forms.is_some();
        clauses.push((Occur::Must, forms.unwrap_or_else(|| part.box_clone())));
    }
    any.then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
}

/// A word or any of its stems, the word boosted; `None` if it has none.
fn word_forms(t: &Term, stems: &[(String, Vec<String>)]) -> Option<Box<dyn Query>> {
    let value = t.value();
    let w = value.as_str()?;
    let (_, forms) = stems.iter().find(|(s, _)| s == w)?;
    let mut c = vec![(Occur::Should, exact(t.clone()))];
    c.extend(forms.iter().map(|f| {
        let q = TermQuery::new(
            Term::from_field_text(t.field(), f),
            IndexRecordOption::WithFreqs,
        );
        (Occur::Should, Box::new(q) as Box<dyn Query>)
    }));
    Some(Box::new(BooleanQuery::new(c)))
}

/// A phrase or the phrase of its words' stems in any one language, the phrase boosted;
/// `None` if no language stems any of its words.
fn phrase_forms(p: &PhraseQuery) -> Option<Box<dyn Query>> {
    let terms = p.phrase_terms();
    let words: Vec<String> = terms
        .iter()
        .map(|t| t.value().as_str().map(str::to_owned))
        .collect::<Option<_>>()?;
    let variants = super::analyzer::phrase_stems(&words);
    if variants.is_empty() {
        return None;
    }
    let boosted = BoostQuery::new(Box::new(p.clone()), EXACT_BOOST);
    let mut c: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, Box::new(boosted))];
    c.extend(variants.into_iter().map(|v| {
        let ts = v
            .iter()
            .map(|w| Term::from_field_text(p.field(), w))
            .collect();
        (
            Occur::Should,
            Box::new(PhraseQuery::new(ts)) as Box<dyn Query>,
        )
    }));
    Some(Box::new(BooleanQuery::new(c)))
}

/// The typo-tolerant form of a query of plain words of `text` (one word, or words all
/// required), or `None` when no word is long enough to allow a typo or the query is of
/// another shape (phrases, `OR`, `-word`, other fields), which stays exact.
pub(super) fn typo_tolerant(
    searcher: &Searcher,
    parsed: &dyn Query,
    text: Field,
) -> Option<Box<dyn Query>> {
    let words = plain_words(parsed, text)?;
    let mut tolerant = 0;
    let clauses = words
        .into_iter()
        .map(|t| {
            let value = t.value();
            let word = value.as_str().unwrap_or_default();
            let d = edits_for(word);
            let q: Box<dyn Query> = if d == 0 || tolerant == MAX_TOLERANT_WORDS {
                Box::new(TermQuery::new(t.clone(), IndexRecordOption::WithFreqs))
            } else {
                tolerant += 1;
                word_or(text, word, &typo_terms(searcher, text, word, d as u8))
            };
            (Occur::Must, q)
        })
        .collect();
    (tolerant > 0).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_marker_and_last_word() {
        assert_eq!(prefix_of("stal*", false), ("stal", true));
        assert_eq!(prefix_of("the stal* ", false), ("the stal", true));
        assert_eq!(prefix_of("stal", true), ("stal", true));
        assert_eq!(prefix_of("stal", false), ("stal", false));
        assert_eq!(prefix_of("*", false), ("*", false));
        assert_eq!(prefix_of("the *", false), ("the *", false));
        assert_eq!(split_last_word("the Stal"), Some(("the ", "stal".into())));
        assert_eq!(split_last_word("Amé"), Some(("", "ame".into())));
        assert_eq!(split_last_word("東"), Some(("", "東".into())));
        assert_eq!(split_last_word("東京物"), None);
        assert_eq!(split_last_word("\"the matrix\""), None);
        assert_eq!(split_last_word("a OR"), None);
        assert_eq!(split_last_word("-stal"), None);
        assert_eq!(split_last_word("  "), None);
    }

    #[test]
    fn at_most_eight_words_are_typo_tolerant() {
        let mut schema = tantivy::schema::Schema::builder();
        let text = schema.add_text_field("text", tantivy::schema::TEXT);
        let index = tantivy::Index::create_in_ram(schema.build());
        let searcher = index.reader().unwrap().searcher();
        let words: Vec<(Occur, Box<dyn Query>)> = (0..20)
            .map(|i| {
                let t = Term::from_field_text(text, &format!("longword{i:02}"));
                let q = TermQuery::new(t, IndexRecordOption::WithFreqs);
                (Occur::Must, Box::new(q) as Box<dyn Query>)
            })
            .collect();
        let q = typo_tolerant(&searcher, &BooleanQuery::new(words), text);
        let Some(q) = q.as_ref().and_then(|q| q.downcast_ref::<BooleanQuery>()) else {
            panic!("a tolerant query");
        };
        let fuzzy = q
            .clauses()
            .iter()
            .filter(|(_, c)| c.downcast_ref::<BooleanQuery>().is_some())
            .count();
        assert_eq!((q.clauses().len(), fuzzy), (20, MAX_TOLERANT_WORDS));
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn typos_allowed_by_word_length() {
        assert_eq!(edits(4), 0);
        assert_eq!(edits(5), 1);
        assert_eq!(edits(8), 1);
        assert_eq!(edits(9), 2);
    }
}
