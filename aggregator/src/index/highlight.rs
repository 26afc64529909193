//! Snippets of search hits (`highlight=true`): the entry's text around its first match, with
//! the words that matched marked.
//!
//! A word matched when one of its terms (as [`analyzer`](super::analyzer) makes them for the
//! entry: folded, stemmed, tagged) is a term of the query, begins with the query's prefix, or
//! is within the typos the query tolerates. The snippet is HTML: the text escaped, the matches
//! in `<mark>…</mark>`, so a page can show it as it is.

use std::collections::HashSet;

use super::analyzer::{query_terms, tokens};
use super::stem::language;
use crate::extract::Extracted;

/// About how many characters of text a snippet shows.
const SNIPPET_CHARS: usize = 160;
/// How many characters before the first match it starts.
const LEAD_CHARS: usize = 40;

/// What to mark: the query's terms, its prefix, the words it tolerates typos in.
#[derive(Debug, Default)]
pub(super) struct Marker {
    terms: HashSet<String>,
    prefix: Option<String>,
    /// Words with the edits they may differ by.
    typos: Vec<(Vec<char>, usize)>,
}

impl Marker {
    /// The marker of a query as typed (`prefix`: its last word is one).
    pub(super) fn of(q: &str, prefix: bool) -> Marker {
        let words: Vec<&str> = q
            .split_whitespace()
            .filter(|w| !matches!(*w, "AND" | "OR" | "NOT") && !w.starts_with('-'))
            .collect();
        let mut m = Marker::default();
        for (i, w) in words.iter().enumerate() {
            let last = i + 1 == words.len();
            for t in query_terms(w.trim_end_matches('*')) {
                let n = t.chars().count();
                if last && prefix {
                    m.prefix = Some(t.clone());
                }
                let d = super::tolerant::edits_for(&t);
                if d > 0 && n <= 64 {
                    m.typos.push((t.chars().collect(), d));
                }
                m.terms.insert(t);
            }
        }
        // Words found by a stem of the query's (see `tolerant::stem_tolerant`).
        for (_, stems) in super::analyzer::query_stems(q) {
            m.terms.extend(stems);
        }
        m
    }

    fn matches(&self, term: &str) -> bool {
        if self.terms.contains(term) || self.prefix.as_deref().is_some_and(|p| term.starts_with(p))
        {
            return true;
        }
        let t: Vec<char> = term.chars().collect();
        self.typos
            .iter()
            .any(|(w, d)| t.len().abs_diff(w.len()) <= *d && edit_distance(w, &t) <= *d)
    }
}

/// The snippet of an entry's extracted text, or `None` when no word of it matched (a match
/// in a part of the value that is not text).
pub(super) fn snippet(x: &Extracted, m: &Marker) -> Option<String> {
    let text = x.text.as_str();
    let lang = language(x.lang.as_deref(), text);
    let mut marks: Vec<(usize, usize)> = Vec::new();
    for t in tokens(text, lang, false) {
        if !m.matches(&t.text) {
            continue;
        }
        match marks.last_mut() {
            // Overlapping or touching (CJK bigrams, a word and its stem): one mark.
            Some(last) if t.offset_from <= last.1 => last.1 = last.1.max(t.offset_to),
            _ => marks.push((t.offset_from, t.offset_to)),
        }
    }
    let first = marks.first()?.0;
    // Start a little before the first match, at a char boundary.
    let lead_start = text
        .get(..first)?
        .char_indices()
        .rev()
        .nth(LEAD_CHARS.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    let start = if lead_start == 0 {
        0
    } else {
        // At the start of a word, if one begins shortly after.
        text.get(lead_start..first)?
            .find(char::is_whitespace)
            .map_or(lead_start, |i| lead_start + i + 1)
    };
    let end = text
        .get(start..)?
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map_or(text.len(), |(i, _)| start + i);
    let mut out = String::with_capacity(end - start + 32);
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for &(a, b) in marks.iter().filter(|(a, _)| *a >= start && *a < end) {
        let b = b.min(end);
        escape(&mut out, text.get(at..a)?);
        out.push_str("<mark>");
        escape(&mut out, text.get(a..b)?);
        out.push_str("</mark>");
        at = b;
    }
    escape(&mut out, text.get(at..end)?);
    if end < text.len() {
        out.push('…');
    }
    Some(out)
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

/// Damerau-Levenshtein distance (optimal string alignment: a swap of neighbours is one
/// edit), as tantivy's automata count it.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for (i, cell) in d.iter_mut().step_by(w).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let (ca, cb) = (a.get(i - 1), b.get(j - 1));
            let cost = usize::from(ca != cb);
            let get = |d: &[usize], i, j| d.get(at(i, j)).copied().unwrap_or(usize::MAX / 2);
            let mut v = (get(&d, i - 1, j) + 1)
                .min(get(&d, i, j - 1) + 1)
                .min(get(&d, i - 1, j - 1) + cost);
            if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                v = v.min(get(&d, i - 2, j - 2) + 1);
            }
            if let Some(cell) = d.get_mut(at(i, j)) {
                *cell = v;
            }
        }
    }
    d.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str, q: &str, prefix: bool) -> Option<String> {
        let x = Extracted {
            text: text.into(),
            ..Default::default()
        };
        snippet(&x, &Marker::of(q, prefix))
    }

    #[test]
    fn marks_the_words_that_matched() {
        assert_eq!(
            of("Le Fabuleux Destin d'Amélie Poulain", "amelie", false).as_deref(),
            Some("Le Fabuleux Destin d&#39;<mark>Amélie</mark> Poulain")
        );
        assert_eq!(
            of("Running runners ran quickly", "run", false).as_deref(),
            Some("<mark>Running</mark> runners ran quickly")
        );
        assert_eq!(
            of("東京物語は小津安二郎の映画です", "小津安二郎", false).as_deref(),
            Some("東京物語は<mark>小津安二郎</mark>の映画です")
        );
        assert_eq!(
            of("<b>Stalker</b> & more", "stalkr", false).as_deref(),
            Some("&lt;b&gt;<mark>Stalker</mark>&lt;/b&gt; &amp; more")
        );
        assert_eq!(
            of("Learning #Rust", "#rust", false).as_deref(),
            Some("Learning <mark>#Rust</mark>")
        );
        assert_eq!(
            of("the stalker and the matrix", "the mat", true).as_deref(),
            Some("<mark>the</mark> stalker and <mark>the</mark> <mark>matrix</mark>")
        );
        assert_eq!(of("nothing here", "matrix", false), None);
    }

    #[test]
    fn long_texts_are_cut_around_the_first_match() {
        let text = format!("{} needle {}", "word ".repeat(100), "tail ".repeat(100));
        let s = of(&text, "needle", false).unwrap_or_default();
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"), "{s}");
        assert!(s.chars().count() <= SNIPPET_CHARS + 20, "{s}");
        assert!(s.trim_start_matches('…').starts_with("word "), "{s}");
    }

    #[test]
    fn edit_distances() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("stalker", "stalkr"), 1);
        assert_eq!(d("stalker", "stalkre"), 1);
        assert_eq!(d("matrix", "matrox"), 1);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("cinematography", "cinematografy"), 2);
    }
}
