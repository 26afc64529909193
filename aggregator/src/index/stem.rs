//! Stems: which language an entry is in, and the stem of a word in a language. Snowball
//! (rust-stemmers) for the 18 languages it has, and a light suffix stripper of our own for
//! Hindi, which Snowball lacks (plural and oblique endings: फ़िल्में → फ़िल्म, लड़के and
//! लड़का → लड़क).

use std::cell::RefCell;
use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

use super::analyzer::{fold, MAX_TERM};

/// How much of a text language detection reads: a short post's worth is enough to tell, and
/// detection costs ~15 ns per character read (with 280, 7% of ingest CPU at 1M entries).
const DETECT_CHARS: usize = 128;

/// A language's stemmer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stemming {
    Snowball(Algorithm),
    Hindi,
}

/// Every stemmer (a query's language is unknown: its words are stemmed in all of them).
pub(super) const ALL: [Stemming; 19] = {
    use Algorithm::*;
    use Stemming::Snowball as S;
    [
        S(Arabic),
        S(Danish),
        S(Dutch),
        S(English),
        S(Finnish),
        S(French),
        S(German),
        S(Greek),
        S(Hungarian),
        S(Italian),
        S(Norwegian),
        S(Portuguese),
        S(Romanian),
        S(Russian),
        S(Spanish),
        S(Swedish),
        S(Tamil),
        S(Turkish),
        Stemming::Hindi,
    ]
};

/// The stemmer for an entry: its declared language (a BCP 47 tag such as `en`, `pt-BR`, or a
/// three-letter code), else the one detected in its text. `None` for a language without a
/// stemmer (CJK, …).
pub(super) fn language(declared: Option<&str>, text: &str) -> Option<Stemming> {
    match declared {
        Some(tag) => declared_language(tag),
        None => detect(text),
    }
}

/// The stemmer of a declared language.
pub(super) fn declared_language(tag: &str) -> Option<Stemming> {
    let primary = tag.split(['-', '_']).next().unwrap_or_default();
    stemmer_of(&primary.to_ascii_lowercase())
}

/// The stemmer of the language detected in `text` (its first [`DETECT_CHARS`] characters).
pub(super) fn detect(text: &str) -> Option<Stemming> {
    let end = text
        .char_indices()
        .nth(DETECT_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let sample = text.get(..end).unwrap_or(text);
    if !sample.chars().any(char::is_alphabetic) {
        return None;
    }
    use whichlang::Lang;
    let alg = match whichlang::detect_language(sample) {
        Lang::Ara => Algorithm::Arabic,
        Lang::Deu => Algorithm::German,
        Lang::Eng => Algorithm::English,
        Lang::Fra => Algorithm::French,
        Lang::Ita => Algorithm::Italian,
        Lang::Nld => Algorithm::Dutch,
        Lang::Por => Algorithm::Portuguese,
        Lang::Rus => Algorithm::Russian,
        Lang::Spa => Algorithm::Spanish,
        Lang::Swe => Algorithm::Swedish,
        Lang::Tur => Algorithm::Turkish,
        Lang::Hin => return Some(Stemming::Hindi),
        Lang::Cmn | Lang::Jpn | Lang::Kor | Lang::Vie => return None,
    };
    Some(Stemming::Snowball(alg))
}

/// The stemmer of an ISO 639-1 or 639-2 code.
fn stemmer_of(code: &str) -> Option<Stemming> {
    let alg = match code {
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
        "hi" | "hin" => return Some(Stemming::Hindi),
        _ => return None,
    };
    Some(Stemming::Snowball(alg))
}

/// Words whose stems are kept, per language and thread: a feed's words repeat (Zipf), and a
/// lookup costs a tenth of a Snowball stem.
const STEM_CACHE: usize = 32_768;

/// A stem cache: foldhash, seeded per process, is several times faster than the default
/// SipHash on short words and still not predictable to whoever writes them.
type Cache = HashMap<String, Option<String>, foldhash::fast::RandomState>;

thread_local! {
    static STEMS: RefCell<Vec<Cache>> = const { RefCell::new(Vec::new()) };
}

/// The folded stem of a lower-cased word in `lang`, if it differs from the word's `folded`
/// form.
pub(super) fn stem_of(lang: Stemming, lower: &str, folded: &str) -> Option<String> {
    with_stem(lang, lower, folded, |s| s.map(str::to_owned))
}

/// `f` of the stem [`stem_of`] gives, read from this thread's cache without a copy.
pub(super) fn with_stem<R>(
    lang: Stemming,
    lower: &str,
    folded: &str,
    f: impl FnOnce(Option<&str>) -> R,
) -> R {
    let stem = || {
        let stemmed = match lang {
            Stemming::Hindi => hindi(lower).to_owned(),
            Stemming::Snowball(alg) => snowball(alg, lower)?,
        };
        let s = fold(&stemmed);
        (s != folded && !s.is_empty()).then_some(s)
    };
    if lower.len() > MAX_TERM {
        return f(stem().as_deref());
    }
    STEMS.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return f(stem().as_deref());
        };
        let i = match lang {
            Stemming::Snowball(alg) => alg as usize,
            Stemming::Hindi => ALL.len() - 1,
        };
        if cache.len() <= i {
            cache.resize_with(i + 1, Cache::default);
        }
        let Some(map) = cache.get_mut(i) else {
            return f(stem().as_deref());
        };
        if let Some(s) = map.get(lower) {
            return f(s.as_deref());
        }
        let s = stem();
        if map.len() >= STEM_CACHE {
            map.clear();
        }
        let r = f(s.as_deref());
        map.insert(lower.to_owned(), s);
        r
    })
}

/// A Snowball stem, `None` if the stemmer panicked.
fn snowball(alg: Algorithm, lower: &str) -> Option<String> {
    // Snowball's Russian stemmer reads ё as е (its prelude does so; rust-stemmers' older
    // one does not, and leaves a word with ё unstemmed).
    let yo;
    let lower = if alg == Algorithm::Russian && lower.contains('ё') {
        yo = lower.replace('ё', "е");
        yo.as_str()
    } else {
        lower
    };
    // rust-stemmers 1.2 was reported to panic on Greek input (an out-of-bounds slice,
    // lance-format/lance#5235; not reproduced here with 2M random words per stemmer): a word
    // that makes a stemmer panic gets no stem, and its entry is indexed all the same.
    std::panic::catch_unwind(|| Stemmer::create(alg).stem(lower).into_owned()).ok()
}

/// Hindi inflectional endings (noun plural and oblique, adjective agreement, verb tense and
/// aspect), longest first. Written with anusvara, as folding leaves them.
const HINDI_ENDINGS: &[&str] = &[
    "ाएंगी",
    "ाएंगे",
    "ाऊंगी",
    "ाऊंगा",
    "ाइयां",
    "ाइयों",
    "ाएगी",
    "ाएगा",
    "ाओगी",
    "ाओगे",
    "एंगी",
    "ेंगी",
    "एंगे",
    "ेंगे",
    "ूंगी",
    "ूंगा",
    "ातीं",
    "ियां",
    "ियों",
    "ाकर",
    "ाइए",
    "ाईं",
    "ाया",
    "ेगी",
    "ेगा",
    "ोगी",
    "ोगे",
    "ाने",
    "ाना",
    "ाते",
    "ाती",
    "ाता",
    "तीं",
    "ाओं",
    "ाएं",
    "ुओं",
    "ुएं",
    "ाओ",
    "िए",
    "ाई",
    "ाए",
    "ीं",
    "ों",
    "ें",
    "ां",
    "ो",
    "े",
    "ू",
    "ु",
    "ी",
    "ि",
    "ा",
];

/// A light Hindi stem: the longest ending of [`HINDI_ENDINGS`] removed, when at least two
/// characters (a consonant and more) are left.
fn hindi(word: &str) -> &str {
    for ending in HINDI_ENDINGS {
        if let Some(stem) = word.strip_suffix(ending) {
            if stem.chars().count() >= 2 {
                return stem;
            }
        }
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_the_value_else_detected() {
        use Stemming::{Hindi, Snowball};
        assert_eq!(
            language(Some("pt-BR"), "x"),
            Some(Snowball(Algorithm::Portuguese))
        );
        assert_eq!(
            language(Some("deu"), "x"),
            Some(Snowball(Algorithm::German))
        );
        assert_eq!(language(Some("hi"), "x"), Some(Hindi));
        assert_eq!(language(Some("ja"), "running"), None);
        assert_eq!(language(Some(""), "running"), None);
        assert_eq!(
            language(None, "The runners were running quickly through the park"),
            Some(Snowball(Algorithm::English))
        );
        assert_eq!(
            language(
                None,
                "Die Läufer liefen schnell durch den Park und über die Brücke"
            ),
            Some(Snowball(Algorithm::German))
        );
        assert_eq!(language(None, "मुझे हिन्दी फ़िल्में बहुत पसंद हैं"), Some(Hindi));
        assert_eq!(language(None, "東京物語は小津安二郎の映画です"), None);
        assert_eq!(language(None, "12 34 !!"), None);
    }

    #[test]
    fn hindi_endings() {
        assert_eq!(hindi("फ़िल्में"), "फ़िल्म");
        assert_eq!(hindi("लड़के"), hindi("लड़का"));
        assert_eq!(hindi("लड़कियों"), "लड़क");
        assert_eq!(hindi("जाएंगे"), "जा");
        assert_eq!(hindi("की"), "की");
        assert_eq!(hindi("ा"), "ा");
    }

    #[test]
    fn russian_yo_is_stemmed_as_ye() {
        let ru = Stemming::Snowball(Algorithm::Russian);
        assert_eq!(stem_of(ru, "мёдом", "медом").as_deref(), Some("мед"));
        assert_eq!(stem_of(ru, "ёлку", "елку").as_deref(), Some("елк"));
    }
}
