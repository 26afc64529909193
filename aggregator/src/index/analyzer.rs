//! How text becomes index terms, the same for entries and for the words of a query:
//!
//! - **words**: runs of letters, digits and combining marks (so that a word in an Indic
//!   script is not cut at its vowel signs); a run of CJK characters (Han, kana, Hangul) has no
//!   spaces to cut at, so it becomes its overlapping bigrams (`東京物語` → `東京 京物 物語`,
//!   a lone character stays itself). A CJK word of a query is then the phrase of its bigrams.
//!   An entry's Han characters and Hangul syllables are indexed alone too, since one
//!   character is often a word (猫, 꽃).
//!   Bigrams rather than a dictionary tokenizer (lindera, jieba): no dictionary of tens of MB
//!   to ship and load, every language of the three alike, and any substring of two or more
//!   characters is found, at the price of a larger index for CJK text. Measured on the
//!   judged CJK queries (`testdata/search/judged-cjk.json`, 61 queries; a throwaway harness,
//!   2026-12-01): bigrams found every entry in zh, ja and ko; jieba 0.93–0.95 (a
//!   one-character word inside a compound, 猫 in 小猫咪, and 春节 快乐 in 春节快乐), lindera
//!   IPADIC 1.00, ko-dic 0.95 (한강에서 cut as 한/강/에서). The dictionaries made 2.2–3.3×
//!   fewer postings, but add 3.2 MB (jieba) and 47.6 MB (IPADIC) to the binary, and lindera's
//!   embedded dictionaries download at build time.
//! - **folding**: Unicode NFKC (full-width letters, ligatures), lower case, and the
//!   diacritics of Latin, Greek and Cyrillic letters removed (`Amélie` → `amelie`, `über` →
//!   `uber`; in Devanagari the nukta, and chandrabindu as anusvara), so a query typed
//!   without them finds the text written with them. A word that folding changed is also
//!   indexed as written (lower case), so a query that writes the accents ranks it first.
//! - **stems**: in an entry's language (its `lang`, `langs` or `language`, else detected;
//!   see [`stem`](super::stem)), each word's stem is indexed at the word's position when it
//!   differs (`running` → `running` and `run`), so `run` finds "running" and the exact form
//!   is still there for a query that uses it. A query's language is unknown: its words are
//!   searched as typed, and then (when they do not fill the page) with their stems in every
//!   language ([`query_stems`], [`phrase_stems`]).
//!
//! Changing any of this changes the terms: it needs a [`SCHEMA_VERSION`](super::SCHEMA_VERSION)
//! bump, which rebuilds the index from the stored blocks.

use super::stem::{stem_of, with_stem, Stemming, ALL};
use std::sync::LazyLock;

use tantivy::query::QueryParser;
use tantivy::schema::Field;
use tantivy::tokenizer::{
    PreTokenizedStream, PreTokenizedString, Token, TokenStream, Tokenizer, TokenizerManager,
};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The name the text field's tokenizer is registered under.
pub(super) const TOKENIZER: &str = "apiary";

/// Longer terms (in bytes, folded) are left out: no one searches for them, and tantivy limits
/// a term's length.
pub(super) const MAX_TERM: usize = 64;

/// The text field's tokenizer on the index side: it reads an entry's terms as
/// [`analyzed_text`] wrote them. The analysis itself runs where the entry is made, in its
/// feed's ingest task (feeds run in parallel), not on tantivy's single indexing thread; and
/// tantivy clones a pre-tokenized value's every token, but a text value once.
#[derive(Clone, Default)]
pub(super) struct Analyzed;

/// Before each term of an analyzed text: the next word, or another term of the same word.
/// Terms are letters, digits, marks, CJK, `#` and `@`: never these.
const NEXT: char = '\u{1}';
const SAME: char = '\u{2}';

impl Tokenizer for Analyzed {
    type TokenStream<'a> = AnalyzedStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> AnalyzedStream<'a> {
        AnalyzedStream {
            rest: text,
            at: 0,
            token: Token {
                position: usize::MAX,
                ..Token::default()
            },
        }
    }
}

/// The terms of an analyzed text, one token reused.
pub(super) struct AnalyzedStream<'a> {
    rest: &'a str,
    /// Bytes read so far (the token's offsets, which the index does not keep).
    at: usize,
    token: Token,
}

impl TokenStream for AnalyzedStream<'_> {
    fn advance(&mut self) -> bool {
        let mut chars = self.rest.chars();
        let Some(sep) = chars.next() else {
            return false;
        };
        let body = chars.as_str();
        let end = body.find([NEXT, SAME]).unwrap_or(body.len());
        if sep != SAME || self.token.position == usize::MAX {
            self.token.position = self.token.position.wrapping_add(1);
        }
        self.token.text.clear();
        self.token
            .text
            .push_str(body.get(..end).unwrap_or_default());
        self.token.offset_from = self.at + sep.len_utf8();
        self.token.offset_to = self.token.offset_from + end;
        self.at = self.token.offset_to;
        self.rest = body.get(end..).unwrap_or_default();
        true
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// An entry's text analyzed (stemmed in its `declared` language, else the one detected),
/// written as the index's [`Analyzed`] tokenizer reads it.
pub(super) fn analyzed_text(text: &str, declared: Option<&str>) -> String {
    let lang = super::stem::language(declared, text);
    let mut out = String::with_capacity(text.len() + text.len() / 2 + 8);
    analyze(text, lang, false, &mut Out::new(Sink::Text(&mut out)));
    out
}

/// The query side's tokenizer: words, folded, no stems (the query's language is unknown).
#[derive(Clone, Default)]
pub(super) struct Words;

impl Tokenizer for Words {
    type TokenStream<'a> = PreTokenizedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PreTokenizedStream {
        PreTokenizedStream::from(PreTokenizedString {
            text: String::new(),
            tokens: tokens(text, None, true),
        })
    }
}

/// Registers the index side's tokenizer with `index`: it is not kept in the index's files, so
/// this comes on every open, before any use.
pub(super) fn register(index: &tantivy::Index) {
    index
        .tokenizers()
        .register(TOKENIZER, tantivy::tokenizer::TextAnalyzer::from(Analyzed));
}

/// The parser of search text: words of `text` all required, read by the query side's
/// tokenizer ([`Words`]; the index's own reads analyzed text).
pub(super) fn query_parser(index: &tantivy::Index, text: Field) -> QueryParser {
    static WORDS: LazyLock<TokenizerManager> = LazyLock::new(|| {
        let m = TokenizerManager::default();
        m.register(TOKENIZER, tantivy::tokenizer::TextAnalyzer::from(Words));
        m
    });
    let mut parser = QueryParser::new(index.schema(), vec![text], WORDS.clone());
    parser.set_conjunction_by_default();
    parser
}

/// The terms a query word is searched as (folded, no stems).
pub(super) fn query_terms(word: &str) -> Vec<String> {
    tokens(word, None, true)
        .into_iter()
        .map(|t| t.text)
        .collect()
}

/// The query's words as written (lower case) where folding changes them (`Amélie` →
/// `amélie`): the entries that write them so are ranked first (see [`tokens`]).
pub(super) fn written_forms(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in tokens(query, None, true) {
        let Some(word) = query.get(t.offset_from..t.offset_to) else {
            continue;
        };
        if word.is_ascii() || word.starts_with(['#', '@']) || word.chars().any(is_cjk) {
            continue;
        }
        let l = lower(word);
        if l != t.text && l.len() <= MAX_TERM && !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// Each folded word of a query with its stems in every language that has a stemmer (the
/// query's language is unknown), those that differ from it: `corriendo` → `corr`, `cats` →
/// `cat`. An entry's words are indexed with their stems in the entry's language, so a stem
/// of the query finds the other forms of its word.
pub(super) fn query_stems(query: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in tokens(query, None, true) {
        let Some(word) = query.get(t.offset_from..t.offset_to) else {
            continue;
        };
        if t.text.starts_with(['#', '@'])
            || word.chars().any(is_cjk)
            || out.iter().any(|(w, _)| *w == t.text)
        {
            continue;
        }
        let l = lower(word);
        let mut stems: Vec<String> = Vec::new();
        for lang in ALL {
            if let Some(s) = stem_of(lang, &l, &t.text) {
                if !stems.contains(&s) {
                    stems.push(s);
                }
            }
        }
        if !stems.is_empty() {
            out.push((t.text, stems));
        }
    }
    out
}

/// The phrase of `words` (folded terms) stemmed in each language that stems any of them,
/// without repeats: a phrase whose words are inflected otherwise is found by one of these.
pub(super) fn phrase_stems(words: &[String]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for lang in ALL {
        let mut changed = false;
        let phrase: Vec<String> = words
            .iter()
            .map(|w| match stem_of(lang, w, w) {
                Some(s) => {
                    changed = true;
                    s
                }
                None => w.clone(),
            })
            .collect();
        if changed && !out.contains(&phrase) {
            out.push(phrase);
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Gap,
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() || is_combining_mark(c) {
        Class::Word
    } else {
        Class::Gap
    }
}

/// Han (with extensions and compatibility forms), kana (with half-width katakana) and Hangul.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF // Hangul Jamo
        | 0x3040..=0x30FF // Hiragana, Katakana
        | 0x3130..=0x318F // Hangul compatibility Jamo
        | 0x31F0..=0x31FF // Katakana phonetic extensions
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xAC00..=0xD7AF // Hangul syllables
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0xFF66..=0xFF9F // half-width katakana
        | 0x20000..=0x323AF // CJK extensions B to H
    )
}

/// The tokens of `text`: words and CJK bigrams, folded, each at its own position; with
/// `stem`, a word's stem too, at the word's position. A word right after `#` or `@` (a
/// hashtag or mention) is also indexed with it, at the word's position: a `query` for
/// `#rust` looks for that token alone, one for `rust` finds both.
pub(super) fn tokens(text: &str, stem: Option<Stemming>, query: bool) -> Vec<Token> {
    let mut tokens = Vec::new();
    analyze(text, stem, query, &mut Out::new(Sink::Tokens(&mut tokens)));
    tokens
}

/// Where [`analyze`] puts terms: tokens, or an analyzed text (see [`analyzed_text`]) written
/// as it goes, without a string per term.
enum Sink<'a> {
    Tokens(&'a mut Vec<Token>),
    Text(&'a mut String),
}

/// Terms with their positions: a word's first term at the next position, its other terms
/// at the same.
struct Out<'a> {
    sink: Sink<'a>,
    /// The next word's position.
    next: usize,
    /// The position of the last term put, if any.
    last: Option<usize>,
}

impl<'a> Out<'a> {
    fn new(sink: Sink<'a>) -> Self {
        Out {
            sink,
            next: 0,
            last: None,
        }
    }

    /// A term at the next position; false if it is left out (empty or too long).
    fn word(&mut self, from: usize, to: usize, text: &str) -> bool {
        let keep = !text.is_empty() && text.len() <= MAX_TERM;
        if keep {
            self.put(from, to, self.next, text);
            self.next += 1;
        }
        keep
    }

    /// Another term of the last word, at its position.
    fn same(&mut self, from: usize, to: usize, text: &str) {
        if !text.is_empty() && text.len() <= MAX_TERM {
            self.put(from, to, self.next.saturating_sub(1), text);
        }
    }

    fn put(&mut self, from: usize, to: usize, position: usize, text: &str) {
        match &mut self.sink {
            Sink::Tokens(tokens) => tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: text.to_owned(),
                position_length: 1,
            }),
            Sink::Text(out) => {
                out.push(if self.last == Some(position) {
                    SAME
                } else {
                    NEXT
                });
                out.push_str(text);
            }
        }
        self.last = Some(position);
    }
}

/// The terms of `text` put into `out` (see [`tokens`]).
fn analyze(text: &str, stem: Option<Stemming>, query: bool, out: &mut Out<'_>) {
    // The folded form of an ASCII word, reused from word to word.
    let mut ascii = String::new();
    let mut chars = text.char_indices().peekable();
    // A CJK run's chars with their offsets (kept for its bigrams; words need only their end).
    let mut run: Vec<(usize, char)> = Vec::new();
    while let Some((start, c)) = chars.next() {
        let kind = class(c);
        if kind == Class::Gap {
            continue;
        }
        run.clear();
        run.push((start, c));
        let mut end = text.len();
        while let Some(&(i, n)) = chars.peek() {
            // Combining marks stay with the run they follow (a kana voicing mark too).
            if class(n) == kind || (kind == Class::Cjk && is_combining_mark(n)) {
                if kind == Class::Cjk {
                    run.push((i, n));
                }
                chars.next();
            } else {
                end = i;
                break;
            }
        }
        match kind {
            Class::Word => {
                let word = text.get(start..end).unwrap_or_default();
                // ASCII (most text) is folded by lower-casing it.
                let (lower, folded_owned) = if word.is_ascii() {
                    ascii.clear();
                    ascii.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
                    (None, None)
                } else {
                    let l = lower(word);
                    let f = fold(&l);
                    (Some(l), Some(f))
                };
                let folded: &str = folded_owned.as_deref().unwrap_or(&ascii);
                let tagged = tag_marker(text, start)
                    .map(|m| (start.saturating_sub(m.len_utf8()), format!("{m}{folded}")));
                if let (Some((from, tag)), true) = (&tagged, query) {
                    out.word(*from, end, tag);
                    continue;
                }
                if !out.word(start, end, folded) {
                    continue;
                }
                // Same position as the word: more terms, not more words. Words of one or
                // two letters and numbers have no other forms.
                let stems = folded.len() > 2 && !folded.bytes().all(|b| b.is_ascii_digit());
                if let Some(lang) = stem.filter(|_| stems) {
                    let lower = lower.as_deref().unwrap_or(folded);
                    with_stem(lang, lower, folded, |s| {
                        if let Some(s) = s {
                            out.same(start, end, s);
                        }
                    });
                }
                // The word as written (lower case) where folding changed it: a query that
                // writes its accents ranks it above the same word without them.
                if let Some(l) = lower.as_deref().filter(|l| *l != folded && !query) {
                    out.same(start, end, l);
                }
                if let Some((from, tag)) = &tagged {
                    out.same(*from, end, tag);
                }
            }
            Class::Cjk => {
                let bases: Vec<(usize, char)> = run
                    .iter()
                    .copied()
                    .filter(|&(_, c)| !is_combining_mark(c))
                    .collect();
                if bases.len() == 1 {
                    out.word(start, end, &fold(&lower(&c.to_string())));
                }
                // Of an entry, each Han character and Hangul syllable alone too, at the
                // position of the bigram it begins (the last at the last bigram's): one
                // character is a word (猫, 꽃) that no bigram query finds. Not kana: a lone
                // kana is a particle or a sound, not something searched for.
                let unigram = |out: &mut Out<'_>, (a, ch): (usize, char)| {
                    if !query && !is_kana(ch) {
                        out.same(a, a + ch.len_utf8(), &fold(&lower(&ch.to_string())));
                    }
                };
                for pair in bases.windows(2) {
                    if let [(a, ca), (b, cb)] = pair {
                        let to = b + cb.len_utf8();
                        let s: String = [*ca, *cb].iter().collect();
                        if out.word(*a, to, &fold(&lower(&s))) {
                            unigram(out, (*a, *ca));
                            if bases.last().is_some_and(|(l, _)| l == b) {
                                unigram(out, (*b, *cb));
                            }
                        }
                    }
                }
            }
            Class::Gap => {}
        }
    }
}

/// Hiragana and katakana (full and half width).
fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

/// `#` or `@` if it comes right before the word at `start`, itself not inside a word
/// (`#rust`, `@alice`; not `a#b`).
fn tag_marker(text: &str, start: usize) -> Option<char> {
    let mut before = text.get(..start)?.chars().rev();
    let m = before.next().filter(|m| matches!(m, '#' | '@'))?;
    before
        .next()
        .is_none_or(|c| !c.is_alphanumeric())
        .then_some(m)
}

/// NFKC and lower case; ASCII (most text) takes the short way.
fn lower(word: &str) -> String {
    if word.is_ascii() {
        word.to_ascii_lowercase()
    } else {
        word.nfkc().collect::<String>().to_lowercase()
    }
}

/// Removes the diacritics of Latin, Greek and Cyrillic letters (not the marks that are part
/// of other scripts' letters, such as Indic vowel signs), then recomposes.
pub(super) fn fold(lower: &str) -> String {
    if lower.is_ascii() {
        return lower.to_owned();
    }
    let mut out = String::with_capacity(lower.len());
    let mut base_folds = false;
    for c in lower.nfd() {
        if is_combining_mark(c) {
            if !base_folds {
                match c {
                    // Devanagari: the nukta (फ़ → फ), often not typed, is dropped like a
                    // diacritic, and chandrabindu is written as anusvara (गाँव → गांव) as
                    // often as not.
                    '\u{093C}' => {}
                    '\u{0901}' => out.push('\u{0902}'),
                    _ => out.push(c),
                }
            }
            continue;
        }
        base_folds = (c as u32) < 0x0530;
        out.push(match c {
            'ß' => 's', // with its pair below: "straße" → "strasse"
            'ı' => 'i',
            'ø' => 'o',
            'đ' => 'd',
            'ł' => 'l',
            'æ' => 'a',
            'œ' => 'o',
            _ => c,
        });
        match c {
            'ß' => out.push('s'),
            'æ' | 'œ' => out.push('e'),
            _ => {}
        }
    }
    out.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(text: &str, stem: Option<Stemming>) -> Vec<(usize, String)> {
        tokens(text, stem, false)
            .into_iter()
            .map(|t| (t.position, t.text))
            .collect()
    }

    fn words(text: &str) -> Vec<String> {
        tokens(text, None, false)
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn folds_case_width_and_diacritics() {
        assert_eq!(query_terms("Amélie"), ["amelie"]);
        assert_eq!(
            query_terms("Der Himmel über Berlin"),
            ["der", "himmel", "uber", "berlin"]
        );
        assert_eq!(
            query_terms("Москва слезам не верит"),
            ["москва", "слезам", "не", "верит"]
        );
        assert_eq!(query_terms("ＦＵＬＬ width ﬁne"), ["full", "width", "fine"]);
        assert_eq!(
            query_terms("Straße, Ærø, Łódź"),
            ["strasse", "aero", "lodz"]
        );
        assert_eq!(query_terms("Ἀθῆναι"), ["αθηναι"]);
        // Decomposed input folds like composed input.
        assert_eq!(query_terms("Ame\u{301}lie"), ["amelie"]);
    }

    /// The (position, term)s the index's tokenizer reads from an entry's analyzed text.
    fn field_terms(text: &str, declared: Option<&str>) -> Vec<(usize, String)> {
        let analyzed = analyzed_text(text, declared);
        let mut tokenizer = Analyzed;
        let mut stream = tokenizer.token_stream(&analyzed);
        let mut out = Vec::new();
        while stream.advance() {
            out.push((stream.token().position, stream.token().text.clone()));
        }
        out
    }

    #[test]
    fn analyzed_texts_read_back_as_their_tokens() {
        for (text, declared) in [
            ("Running runners ran", Some("en-GB")),
            ("running", Some("ja")),
            ("The runners were running quickly through the park", None),
            ("फ़िल्में", Some("hi")),
            ("東京物語は小津 #Rust @alice Amélie", None),
            ("", None),
            ("!!", None),
        ] {
            let lang = super::super::stem::language(declared, text);
            let want: Vec<(usize, String)> = tokens(text, lang, false)
                .into_iter()
                .map(|t| (t.position, t.text))
                .collect();
            assert_eq!(field_terms(text, declared), want, "{text}");
        }
        assert!(field_terms("running", Some("en")).contains(&(0, "run".to_owned())));
        assert_eq!(
            field_terms("running", Some("ja")),
            [(0, "running".to_owned())]
        );
        // Whatever it is given, the stream starts at position 0 and ends.
        let mut tokenizer = Analyzed;
        let mut odd = tokenizer.token_stream("\u{2}a\u{2}\u{1}\u{1}b");
        let mut seen = Vec::new();
        while odd.advance() {
            seen.push((odd.token().position, odd.token().text.clone()));
        }
        assert_eq!(seen.first(), Some(&(0, "a".to_owned())));
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn words_as_written_beside_their_folded_form() {
        let t = terms("Amélie über tokyo ＴＯＫＹＯ", None);
        assert_eq!(
            t,
            [
                (0, "amelie".into()),
                (0, "amélie".into()),
                (1, "uber".into()),
                (1, "über".into()),
                (2, "tokyo".into()),
                (3, "tokyo".into()),
            ]
        );
        // A query is searched folded; its written forms are asked for apart.
        assert_eq!(query_terms("Amélie"), ["amelie"]);
        assert_eq!(
            written_forms("Amélie AMÉLIE uber #café 東京 Ёлка"),
            ["amélie", "ёлка"]
        );
    }

    #[test]
    fn a_query_word_has_its_stems_in_every_language() {
        let stems = query_stems("corriendo cats #runs東京 cats x");
        let of = |w: &str| {
            stems
                .iter()
                .find(|(t, _)| t == w)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        assert!(of("corriendo").contains(&"corr".to_owned()), "{stems:?}");
        assert!(of("cats").contains(&"cat".to_owned()), "{stems:?}");
        assert_eq!(stems.iter().filter(|(t, _)| t == "cats").count(), 1);
        assert!(stems
            .iter()
            .all(|(t, s)| !t.starts_with('#') && !s.contains(t)));
        assert!(of("東京").is_empty() && of("x").is_empty());
    }

    #[test]
    fn hashtags_and_mentions_are_tokens_of_their_own() {
        assert_eq!(
            words("Learning #Rust, @Alice a#b"),
            ["learning", "rust", "#rust", "alice", "@alice", "a", "b"]
        );
        let q: Vec<String> = tokens("#Rust @alice", None, true)
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(q, ["#rust", "@alice"]);
        let t = terms("go #rust", None);
        assert_eq!(
            t,
            [(0, "go".into()), (1, "rust".into()), (1, "#rust".into())]
        );
    }

    #[test]
    fn indic_words_keep_their_vowel_signs() {
        // हिन्दी: a virama and vowel signs inside one word. The nukta folds away (फ़ → फ),
        // the word as written is kept beside it; chandrabindu folds to anusvara.
        assert_eq!(query_terms("हिन्दी फ़िल्म गाँव"), ["हिन्दी", "फिल्म", "गांव"]);
        assert_eq!(words("फ़िल्म"), ["फिल्म", "फ़िल्म"]);
    }

    #[test]
    fn cjk_runs_become_bigrams_at_their_positions() {
        // Han and Hangul characters alone too, at the position of the bigram they begin;
        // kana (は) not.
        let t = terms("東京物語は小津", None);
        let want: Vec<(usize, String)> = [
            (0, "東京"),
            (0, "東"),
            (1, "京物"),
            (1, "京"),
            (2, "物語"),
            (2, "物"),
            (3, "語は"),
            (3, "語"),
            (4, "は小"),
            (5, "小津"),
            (5, "小"),
            (5, "津"),
        ]
        .iter()
        .map(|(i, s)| (*i, s.to_string()))
        .collect();
        assert_eq!(t, want);
        // A query's word is its bigrams alone.
        assert_eq!(query_terms("東京物"), ["東京", "京物"]);
        assert_eq!(words("猫"), ["猫"]);
        assert_eq!(query_terms("Tokyo 東京 2024"), ["tokyo", "東京", "2024"]);
        assert_eq!(query_terms("서울에서"), ["서울", "울에", "에서"]);
        // Offsets are byte ranges of the original text.
        let tk = tokens("a 東京物", None, false);
        assert_eq!((tk[1].offset_from, tk[1].offset_to), (2, 8));
        assert_eq!((tk[3].offset_from, tk[3].offset_to), (5, 11));
    }

    #[test]
    fn stems_share_the_word_position() {
        let t = terms(
            "Running runners ran quickly",
            Some(Stemming::Snowball(rust_stemmers::Algorithm::English)),
        );
        assert!(t.contains(&(0, "running".into())), "{t:?}");
        assert!(t.contains(&(0, "run".into())), "{t:?}");
        assert!(t.contains(&(1, "runners".into())), "{t:?}");
        assert!(t.contains(&(2, "ran".into())), "{t:?}");
        assert!(t.iter().all(|(p, _)| *p <= 3), "{t:?}");
    }

    /// Every stemmer on words of many scripts: each word gives its token.
    #[test]
    fn every_stemmer_on_any_script() {
        let words = "αντιθετικός ίσας ισα αντιθετ Ἀθῆναι running Läufer москва العربية ñandú \
            ǅemal İstanbul ﬁne a ab x\u{301} 東京 한국어 हिन्दी";
        for lang in ALL {
            let t = tokens(words, Some(lang), false);
            assert!(t.len() >= 17, "{lang:?}: {t:?}");
        }
    }

    /// Whatever the input, tokens are within the text, in order, and not too long.
    #[test]
    fn any_text_gives_well_formed_tokens() {
        let samples = [
            "",
            "\u{301}\u{301}abc",
            "ä\u{0}b\u{feff}c",
            "ｱｲｳ\u{3099}ｴ",
            "𠀀𠀁 ok",
            &"x".repeat(200),
            "a\u{30fc}ー\u{309a}",
        ];
        for s in samples {
            let mut last = 0;
            for t in tokens(
                s,
                Some(Stemming::Snowball(rust_stemmers::Algorithm::English)),
                false,
            ) {
                assert!(
                    t.offset_from <= t.offset_to && t.offset_to <= s.len(),
                    "{s:?}"
                );
                assert!(s.is_char_boundary(t.offset_from) && s.is_char_boundary(t.offset_to));
                assert!(t.position >= last, "{s:?}");
                assert!(!t.text.is_empty() && t.text.len() <= MAX_TERM);
                last = t.position;
            }
        }
    }
}
