//! Writes the seed corpus of every target: `seeds [DIR]` (default `fuzz/corpus`) makes
//! `DIR/<target>/seed-NNN` from the real encoders. Other files there (regressions, inputs
//! found by AFL++ worth keeping) are left alone.

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    for (name, _) in apiary_fuzz::TARGETS {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d)?;
        let seeds = apiary_fuzz::seeds::seeds(name);
        for (file, bytes) in &seeds {
            std::fs::write(d.join(file), bytes)?;
        }
        println!("{name}: {} seeds", seeds.len());
    }
    Ok(())
}
