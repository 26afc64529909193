//! How text becomes index terms, the same for entries and for the words of a query:
//!
//! - **words**: runs of letters, digits and combining marks (so that a word in an Indic
//!   script is not cut at its vowel signs); a run of CJK characters (Han, kana, Hangul) has no
//!   spaces to cut at, so it becomes its overlapping bigrams (`東京物語` → `東京 京物 物語`,
//!   a lone character stays itself). A CJK word of a query is then the phrase of its bigrams.
//!   Bigrams rather than a dictionary tokenizer (lindera, jieba): no dictionary of tens of MB
//!   to ship and load, every language of the three alike, and any substring of two or more
//!   characters is found, at the price of a larger index for CJK text.
//! - **folding**: Unicode NFKC (full-width letters, ligatures), lower case, and the
//!   diacritics of Latin, Greek and Cyrillic letters removed (`Amélie` → `amelie`, `über` →
//!   `uber`), so a query typed without them finds the text written with them.
//! - **stems**, for entries only: in the entry's language (its `lang`, `langs` or `language`,
//!   else detected), each word's stem is indexed at the word's position when it differs
//!   (`running` → `running` and `run`), so `run` finds "running" and the exact form is still
//!   there for a query that uses it.
//!
//! Changing any of this changes the terms: it needs a [`SCHEMA_VERSION`](super::SCHEMA_VERSION)
//! bump, which rebuilds the index from the stored blocks.

use std::cell::RefCell;
use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};
use tantivy::tokenizer::{PreTokenizedStream, PreTokenizedString, Token, Tokenizer};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The name the text field's tokenizer is registered under.
pub(super) const TOKENIZER: &str = "apiary";

/// Longer terms (in bytes, folded) are left out: no one searches for them, and tantivy limits
/// a term's length.
const MAX_TERM: usize = 64;

/// How much of a text language detection reads: a short post's worth is enough to tell, and
/// detection costs ~15 ns per character read (with 2000, a tenth of an entry's ingest CPU).
const DETECT_CHARS: usize = 280;

/// The query side: words, folded, no stems (the query's language is unknown).
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

/// Registers the query side's tokenizer with `index`: it is not kept in the index's files, so
/// this comes on every open, before any use.
pub(super) fn register(index: &tantivy::Index) {
    index
        .tokenizers()
        .register(TOKENIZER, tantivy::tokenizer::TextAnalyzer::from(Words));
}

/// The terms a query word is searched as (folded, no stems).
pub(super) fn query_terms(word: &str) -> Vec<String> {
    tokens(word, None, true)
        .into_iter()
        .map(|t| t.text)
        .collect()
}

/// The terms of an entry's text, stemmed in `lang` (see [`language`]). The text itself is
/// left out: the field is not stored, and tantivy clones the whole value when it indexes it.
pub(super) fn analyze(text: &str, lang: Option<Algorithm>) -> PreTokenizedString {
    PreTokenizedString {
        text: String::new(),
        tokens: tokens(text, lang, false),
    }
}

/// The stemmer for an entry: its declared language (a BCP 47 tag such as `en`, `pt-BR`, or a
/// three-letter code), else the one detected in its text. `None` for a language without a
/// stemmer (CJK, Hindi, …).
pub(super) fn language(declared: Option<&str>, text: &str) -> Option<Algorithm> {
    if let Some(tag) = declared {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        return stemmer_of(&primary.to_ascii_lowercase());
    }
    let end = text
        .char_indices()
        .nth(DETECT_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let sample = text.get(..end).unwrap_or(text);
    if !sample.chars().any(char::is_alphabetic) {
        return None;
    }
    use whichlang::Lang;
    match whichlang::detect_language(sample) {
        Lang::Ara => Some(Algorithm::Arabic),
        Lang::Deu => Some(Algorithm::German),
        Lang::Eng => Some(Algorithm::English),
        Lang::Fra => Some(Algorithm::French),
        Lang::Ita => Some(Algorithm::Italian),
        Lang::Nld => Some(Algorithm::Dutch),
        Lang::Por => Some(Algorithm::Portuguese),
        Lang::Rus => Some(Algorithm::Russian),
        Lang::Spa => Some(Algorithm::Spanish),
        Lang::Swe => Some(Algorithm::Swedish),
        Lang::Tur => Some(Algorithm::Turkish),
        Lang::Cmn | Lang::Hin | Lang::Jpn | Lang::Kor | Lang::Vie => None,
    }
}

/// The Snowball stemmer of an ISO 639-1 or 639-2 code.
fn stemmer_of(code: &str) -> Option<Algorithm> {
    Some(match code {
        "ar" | "ara" => Algorithm::Arabic,
        "da" | "dan" => Algorithm::Danish,
        "nl" | "nld" | "dut" => Algorithm::Dutch,
        "en" | "eng" => Algorithm::English,
        "fi" | "fin" => Algorithm::Finnish,
        "fr" | "fra" | "fre" => Algorithm::French,
        "de" | "deu" | "ger" => Algorithm::German,
        "el" | "ell" | "gre" => Algorithm::Greek,
        "hu" | "hun" => Algorithm::Hungarian,
        "it" | "ita" => Algorithm::Italian,
        "no" | "nb" | "nn" | "nor" | "nob" | "nno" => Algorithm::Norwegian,
        "pt" | "por" => Algorithm::Portuguese,
        "ro" | "ron" | "rum" => Algorithm::Romanian,
        "ru" | "rus" => Algorithm::Russian,
        "es" | "spa" => Algorithm::Spanish,
        "sv" | "swe" => Algorithm::Swedish,
        "ta" | "tam" => Algorithm::Tamil,
        "tr" | "tur" => Algorithm::Turkish,
        _ => return None,
    })
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
pub(super) fn tokens(text: &str, stem: Option<Algorithm>, query: bool) -> Vec<Token> {
    let mut out = Vec::new();
    let mut position = 0usize;
    // Adds a token at the next position; false if it is left out.
    let mut push = |out: &mut Vec<Token>, from: usize, to: usize, text: String| {
        let keep = !text.is_empty() && text.len() <= MAX_TERM;
        if keep {
            out.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text,
                position_length: 1,
            });
            position += 1;
        }
        keep
    };
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
                let (lower, folded) = if word.is_ascii() {
                    (None, word.to_ascii_lowercase())
                } else {
                    let l = lower(word);
                    let f = fold(&l);
                    (Some(l), f)
                };
                let marker = tag_marker(text, start);
                let tagged =
                    marker.map(|m| (start.saturating_sub(m.len_utf8()), format!("{m}{folded}")));
                if let (Some((from, tag)), true) = (&tagged, query) {
                    push(&mut out, *from, end, tag.clone());
                    continue;
                }
                let stemmed =
                    stem.and_then(|alg| stem_of(alg, lower.as_deref().unwrap_or(&folded), &folded));
                if !push(&mut out, start, end, folded) {
                    continue;
                }
                // Same position as the word: more terms, not more words.
                let at = out.last().map_or(0, |t| t.position);
                for (from, t) in stemmed.map(|s| (start, s)).into_iter().chain(tagged) {
                    if t.len() <= MAX_TERM {
                        out.push(Token {
                            offset_from: from,
                            offset_to: end,
                            position: at,
                            text: t,
                            position_length: 1,
                        });
                    }
                }
            }
            Class::Cjk => {
                let bases: Vec<(usize, char)> = run
                    .iter()
                    .copied()
                    .filter(|&(_, c)| !is_combining_mark(c))
                    .collect();
                if bases.len() == 1 {
                    push(&mut out, start, end, fold(&lower(&c.to_string())));
                }
                for pair in bases.windows(2) {
                    if let [(a, ca), (_, cb)] = pair {
                        let to = text
                            .get(*a..)
                            .and_then(|rest| rest.char_indices().nth(2))
                            .map_or(end, |(i, _)| a + i);
                        let s: String = [*ca, *cb].iter().collect();
                        push(&mut out, *a, to, fold(&lower(&s)));
                    }
                }
            }
            Class::Gap => {}
        }
    }
    out
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

/// Words whose stems are kept, per language and thread: a feed's words repeat (Zipf), and a
/// lookup costs a tenth of a Snowball stem.
const STEM_CACHE: usize = 32_768;

thread_local! {
    static STEMS: RefCell<Vec<HashMap<String, Option<String>>>> = const { RefCell::new(Vec::new()) };
}

/// The folded stem of a lower-cased word in `alg`, if it differs from the word's `folded`
/// form.
fn stem_of(alg: Algorithm, lower: &str, folded: &str) -> Option<String> {
    let stem = || {
        // rust-stemmers 1.2 was reported to panic on Greek input (an out-of-bounds slice,
        // lance-format/lance#5235; not reproduced here with 2M random words per stemmer): a
        // word that makes a stemmer panic gets no stem, and its entry is indexed all the same.
        let stemmed =
            std::panic::catch_unwind(|| Stemmer::create(alg).stem(lower).into_owned()).ok()?;
        let s = fold(&stemmed);
        (s != folded && !s.is_empty()).then_some(s)
    };
    if lower.len() > MAX_TERM {
        return stem();
    }
    STEMS.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return stem();
        };
        let i = alg as usize;
        if cache.len() <= i {
            cache.resize_with(i + 1, HashMap::new);
        }
        let map = cache.get_mut(i)?;
        if let Some(s) = map.get(lower) {
            return s.clone();
        }
        let s = stem();
        if map.len() >= STEM_CACHE {
            map.clear();
        }
        map.insert(lower.to_owned(), s.clone());
        s
    })
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
fn fold(lower: &str) -> String {
    if lower.is_ascii() {
        return lower.to_owned();
    }
    let mut out = String::with_capacity(lower.len());
    let mut base_folds = false;
    for c in lower.nfd() {
        if is_combining_mark(c) {
            if !base_folds {
                out.push(c);
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

    fn terms(text: &str, stem: Option<Algorithm>) -> Vec<(usize, String)> {
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
        assert_eq!(words("Amélie"), ["amelie"]);
        assert_eq!(
            words("Der Himmel über Berlin"),
            ["der", "himmel", "uber", "berlin"]
        );
        assert_eq!(
            words("Москва слезам не верит"),
            ["москва", "слезам", "не", "верит"]
        );
        assert_eq!(words("ＦＵＬＬ width ﬁne"), ["full", "width", "fine"]);
        assert_eq!(words("Straße, Ærø, Łódź"), ["strasse", "aero", "lodz"]);
        assert_eq!(words("Ἀθῆναι"), ["αθηναι"]);
        // Decomposed input folds like composed input.
        assert_eq!(words("Ame\u{301}lie"), ["amelie"]);
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
        // हिन्दी: a virama and vowel signs inside one word.
        assert_eq!(words("हिन्दी फ़िल्म"), ["हिन्दी", "फ़िल्म"]);
    }

    #[test]
    fn cjk_runs_become_bigrams_at_their_positions() {
        let t = terms("東京物語は小津", None);
        let want: Vec<(usize, String)> = ["東京", "京物", "物語", "語は", "は小", "小津"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.to_string()))
            .collect();
        assert_eq!(t, want);
        assert_eq!(words("猫"), ["猫"]);
        assert_eq!(words("Tokyo 東京 2024"), ["tokyo", "東京", "2024"]);
        assert_eq!(words("서울에서"), ["서울", "울에", "에서"]);
        // Offsets are byte ranges of the original text.
        let tk = tokens("a 東京物", None, false);
        assert_eq!((tk[1].offset_from, tk[1].offset_to), (2, 8));
        assert_eq!((tk[2].offset_from, tk[2].offset_to), (5, 11));
    }

    #[test]
    fn stems_share_the_word_position() {
        let t = terms("Running runners ran quickly", Some(Algorithm::English));
        assert!(t.contains(&(0, "running".into())), "{t:?}");
        assert!(t.contains(&(0, "run".into())), "{t:?}");
        assert!(t.contains(&(1, "runners".into())), "{t:?}");
        assert!(t.contains(&(2, "ran".into())), "{t:?}");
        assert!(t.iter().all(|(p, _)| *p <= 3), "{t:?}");
    }

    #[test]
    fn language_from_the_value_else_detected() {
        assert_eq!(language(Some("pt-BR"), "x"), Some(Algorithm::Portuguese));
        assert_eq!(language(Some("deu"), "x"), Some(Algorithm::German));
        assert_eq!(language(Some("ja"), "running"), None);
        assert_eq!(language(Some(""), "running"), None);
        assert_eq!(
            language(None, "The runners were running quickly through the park"),
            Some(Algorithm::English)
        );
        assert_eq!(
            language(
                None,
                "Die Läufer liefen schnell durch den Park und über die Brücke"
            ),
            Some(Algorithm::German)
        );
        assert_eq!(language(None, "東京物語は小津安二郎の映画です"), None);
        assert_eq!(language(None, "12 34 !!"), None);
    }

    /// Every stemmer on words of many scripts: each word gives its token.
    #[test]
    fn every_stemmer_on_any_script() {
        use Algorithm::*;
        let words = "αντιθετικός ίσας ισα αντιθετ Ἀθῆναι running Läufer москва العربية ñandú \
            ǅemal İstanbul ﬁne a ab x\u{301} 東京 한국어 हिन्दी";
        for alg in [
            Arabic, Danish, Dutch, English, Finnish, French, German, Greek, Hungarian, Italian,
            Norwegian, Portuguese, Romanian, Russian, Spanish, Swedish, Tamil, Turkish,
        ] {
            let t = tokens(words, Some(alg), false);
            assert!(t.len() >= 17, "{alg:?}: {t:?}");
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
            for t in tokens(s, Some(Algorithm::English), false) {
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
