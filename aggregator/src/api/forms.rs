//! Text forms the handlers check themselves, described for `/v1/openapi.json`: schema-only
//! types whose patterns are what the parsers accept (the tests hold them against each other).

use std::borrow::Cow;

use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// z-base-32 as `Key::to_z32` writes it: 52 characters, the last one carrying a single bit.
const Z32: &str = "[ybndrfg8ejkmcpqxot1uwisza345h769]{51}[yo]";
/// 64 hex digits, either case.
const HEX: &str = "[0-9a-fA-F]{64}";

fn string(pattern: String, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
}

macro_rules! text_form {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

/// The spellings of a key `Key::parse` takes.
fn key_pattern() -> String {
    format!(
        "^(?:{Z32}|{HEX}|(?:[hH][yY][pP][eE][rR]|[pP][eE][aA][rR])://(?:{Z32}|{HEX})(?:[/?#].*)?)$"
    )
}

text_form!(
    /// A bee key (`apiary_core::Key::parse`).
    BeeKey,
    string(
        key_pattern(),
        "A bee key: 52 z-base-32 characters (as JS prints `core.id`), 64 hex digits, or \
         either as `hyper://KEY` (or `pear://KEY`), optionally followed by a path.",
    )
);

text_form!(
    /// A `host:port` peer address (`follow::check_peer`).
    PeerAddr,
    string(
        format!("^(?:{HOSTNAME}|\\[{IPV6}\\]):{PORT}$"),
        "A replication address: a DNS name or IPv4 address, or a bracketed IPv6 address, \
         and a port from 1 to 65535.",
    )
    .max_length(Some(255))
);

text_form!(
    /// Where `since` and `until` are in time.
    TimeBound,
    AnyOfBuilder::new()
        .item(string(
            "^-?[0-9]+$".into(),
            "Milliseconds since the Unix epoch (any number of digits: past what the index \
             holds, the end of it).",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some("RFC 3339.")),
        )
);

text_form!(
    /// The cursor of a `/v1/feed` page.
    FeedCursor,
    string(
        "^66(?:2[dD])?(?:3[0-9]){1,18}7[cC](?:[0-7][0-9a-fA-F])*$".into(),
        "Opaque: the `cursor` of the previous page, unchanged.",
    )
);

text_form!(
    /// The cursor of a `/v1/search` page.
    SearchCursor,
    string(
        "^6[fF](?:3[0-9]){1,4}(?:40(?:3[0-9]){1,18}(?:67(?:3[0-9]){1,18})?)?$".into(),
        "Opaque: the `cursor` of the previous page, unchanged (results stop at 10000).",
    )
);

/// A DNS name or IPv4 address: dot-separated labels of letters, digits and `-`, not starting
/// with `-`, each at most 63 long.
const HOSTNAME: &str = "[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*";
/// 1 to 65535 (as `u16::from_str` reads it: a `+` and leading zeros are allowed).
const PORT: &str =
    "\\+?0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
/// An IPv4 address as `Ipv4Addr::from_str` reads it: four decimal octets, no leading zeros.
macro_rules! v4 {
    () => {
        "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}

/// An IPv6 address as `Ipv6Addr::from_str` reads it (no zone): eight groups, or fewer around
/// one `::`; the last two groups may be written as an IPv4 address.
const IPV6: &str = concat!(
    "(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
    "|(?:[0-9a-fA-F]{1,4}:){1,7}:",
    "|(?:[0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    "|(?:[0-9a-fA-F]{1,4}:){1,5}(?::[0-9a-fA-F]{1,4}){1,2}",
    "|(?:[0-9a-fA-F]{1,4}:){1,4}(?::[0-9a-fA-F]{1,4}){1,3}",
    "|(?:[0-9a-fA-F]{1,4}:){1,3}(?::[0-9a-fA-F]{1,4}){1,4}",
    "|(?:[0-9a-fA-F]{1,4}:){1,2}(?::[0-9a-fA-F]{1,4}){1,5}",
    "|[0-9a-fA-F]{1,4}:(?::[0-9a-fA-F]{1,4}){1,6}",
    "|:(?:(?::[0-9a-fA-F]{1,4}){1,7}|:)",
    // With an IPv4 tail: six groups, or L groups, `::`, and at most 5 - L more.
    "|(?:[0-9a-fA-F]{1,4}:){6}",
    v4!(),
    "|::(?:[0-9a-fA-F]{1,4}:){0,5}",
    v4!(),
    "|(?:[0-9a-fA-F]{1,4}:){1}:(?:[0-9a-fA-F]{1,4}:){0,4}",
    v4!(),
    "|(?:[0-9a-fA-F]{1,4}:){2}:(?:[0-9a-fA-F]{1,4}:){0,3}",
    v4!(),
    "|(?:[0-9a-fA-F]{1,4}:){3}:(?:[0-9a-fA-F]{1,4}:){0,2}",
    v4!(),
    "|(?:[0-9a-fA-F]{1,4}:){4}:(?:[0-9a-fA-F]{1,4}:){0,1}",
    v4!(),
    "|(?:[0-9a-fA-F]{1,4}:){5}:",
    v4!(),
    ")"
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use apiary_core::Key;
    use rand::RngCore;
    use regex::Regex;

    use super::*;

    fn pattern_of<T: PartialSchema>() -> Regex {
        let v = serde_json::to_value(T::schema()).unwrap();
        Regex::new(v["pattern"].as_str().unwrap()).unwrap()
    }

    fn random_key() -> Key {
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Key::from_slice(&b).unwrap()
    }

    /// The pattern takes exactly what `Key::parse` takes (the spellings the API documents).
    #[test]
    fn key_pattern_is_key_parse() {
        let re = pattern_of::<BeeKey>();
        for _ in 0..200 {
            let k = random_key();
            let z = k.to_z32();
            let good = [
                z.clone(),
                k.to_hex(),
                k.to_hex().to_uppercase(),
                k.to_url(),
                format!("HYPER://{z}/some/path?x#y"),
                format!("pear://{}", k.to_hex()),
            ];
            for g in &good {
                assert!(re.is_match(g) && Key::parse(g).is_ok(), "{g}");
            }
            let mut bad = vec![
                z.to_uppercase(),
                z[..51].to_owned(),
                format!("{z}y"),
                format!("hyper:/{z}"),
                format!("{z}/path"),
                format!("x{}", &k.to_hex()[1..]),
            ];
            // Another last character: the same first 51, a non-canonical spelling.
            let last = z.chars().last().unwrap();
            for c in "ybndrfg8ejkmcpqxot1uwisza345h769"
                .chars()
                .filter(|&c| c != last)
            {
                bad.push(format!("{}{c}", &z[..51]));
            }
            for b in &bad {
                assert_eq!(re.is_match(b), Key::parse(b).is_ok(), "{b}");
            }
        }
    }

    #[test]
    fn peer_pattern_is_check_peer() {
        let re = pattern_of::<PeerAddr>();
        for (p, ok) in [
            ("127.0.0.1:7702", true),
            ("pub.example.org:1", true),
            ("localhost:65535", true),
            ("a-b.c:080", true),
            ("a:+80", true),
            ("[::1]:7702", true),
            ("[2001:db8::8a2e:370:7334]:1", true),
            ("[::ffff:192.0.2.1]:9", true),
            ("[1:2:3:4:5:6:7:8]:9", true),
            ("[1::2:3:4:5:192.0.2.1]:9", true),
            ("", false),
            ("host", false),
            (":7702", false),
            ("host:0", false),
            ("host:70000", false),
            ("a b:1", false),
            ("[nope]:1", false),
            ("[1:2:3:4:5:6:7:8:9]:1", false),
            ("[::1.2.3.256]:1", false),
            ("[::1.2.3.04]:1", false),
            ("-bad.example:1", false),
            ("a..b:1", false),
            ("[::1]", false),
        ] {
            assert_eq!(re.is_match(p), ok, "pattern, {p}");
            assert_eq!(crate::follow::check_peer(p).is_ok(), ok, "check_peer, {p}");
        }
        let long = format!(
            "{}.{}.{}.{}:1",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        assert!(
            re.is_match(&long) && crate::follow::check_peer(&long).is_err(),
            "maxLength"
        );
    }

    #[test]
    fn cursor_patterns_take_the_cursors_made() {
        let feed = pattern_of::<FeedCursor>();
        for c in [
            hex::encode(format!("f1732960000000000|{}/6b6579", "y".repeat(52))),
            hex::encode("f-5|x"),
            hex::encode("f0|"),
        ] {
            assert!(feed.is_match(&c), "{c}");
        }
        for c in [
            "",
            "zz",
            "6f3132",
            &hex::encode("f|x"),
            &hex::encode("fx|x"),
        ] {
            assert!(!feed.is_match(c), "{c}");
        }
        let search = pattern_of::<SearchCursor>();
        assert!(search.is_match(&hex::encode("o20")) && search.is_match(&hex::encode("o9980")));
        assert!(!search.is_match(&hex::encode("o")) && !search.is_match(&hex::encode("o10020")));
        assert!(search.is_match(&hex::encode("o20@1764000000000000")));
        assert!(search.is_match(&hex::encode("o20@1764000000000000g12")));
        assert!(!search.is_match(&hex::encode("o20@1764000000000000g")));
        assert!(!search.is_match(&hex::encode("o20@")) && !search.is_match(&hex::encode("o20@-1")));
    }
}
