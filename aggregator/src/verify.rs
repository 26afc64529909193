//! `apiary-aggregator verify BUNDLE --key KEY`: a proof bundle checked against the feed's key
//! alone, offline (no config, no data directory, no network).

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use apiary_core::bundle::{self, Bundle, Inclusion};
use apiary_core::Key;

/// Reads, checks and reports; the exit code: 0 proven, 1 refused, 2 not a bundle or not a key.
pub(crate) fn run(path: &Path, key: &str) -> ExitCode {
    let key = match Key::parse(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --key: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    let json: serde_json::Value = match text
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {} is not JSON: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let checked = match json.get("format").and_then(|f| f.as_str()) {
        Some(bundle::FORMAT) => serde_json::from_value::<Bundle>(json)
            .map_err(|e| e.to_string())
            .map(|b| bundle::verify(&b, &key).map(|p| describe(&p))),
        Some(bundle::INCLUSION_FORMAT) => serde_json::from_value::<Inclusion>(json)
            .map_err(|e| e.to_string())
            .map(|i| bundle::verify_inclusion(&i, &key).map(|p| describe_inclusion(&p, &i))),
        other => Err(format!(
            "format {other:?} is neither {:?} nor {:?}",
            bundle::FORMAT,
            bundle::INCLUSION_FORMAT
        )),
    };
    match checked {
        Err(e) => {
            eprintln!("error: {} is not a proof bundle: {e}", path.display());
            ExitCode::from(2)
        }
        Ok(Ok(said)) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("REFUSED: {e}");
            ExitCode::from(1)
        }
    }
}

/// What was proven, in words: the signed log, then the key's value or its absence.
fn describe(p: &bundle::Proven) -> String {
    let head = format!(
        "verified: {} signed a log of {} blocks (fork {})",
        p.feed.to_url(),
        p.length,
        p.fork
    );
    let key = serde_json::to_string(&p.key).unwrap_or_default();
    match &p.entry {
        Some((seq, Some(v))) => format!(
            "{head}\nat version {}, key {key} = {} (block {seq})",
            p.version,
            String::from_utf8_lossy(v)
        ),
        Some((seq, None)) => format!(
            "{head}\nat version {}, key {key} is put with no value (block {seq})",
            p.version
        ),
        None => format!("{head}\nat version {}, key {key} is absent", p.version),
    }
}

/// What an inclusion proof proved, and what it did not.
fn describe_inclusion(p: &bundle::ProvenInclusion, i: &Inclusion) -> String {
    format!(
        "verified (inclusion only): {} signed a log of {} blocks (fork {})\n\
         block {} ({} bytes, leaf hash {}) is in it\n\
         NOT proven: which key or value that block holds ({})",
        p.feed.to_url(),
        p.length,
        p.fork,
        p.seq,
        p.size,
        hex::encode(p.hash),
        i.note
    )
}
