//! Writes the fuzzers' seed inputs (valid records, Parquet, OSM and graph files made by the
//! project's own writers) to `testdata/fuzz/<target>/seed-*`, or under the directory given:
//! `cargo run --example fuzz_seeds -- [DIR]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/fuzz".to_string());
    let seeds = pipeline::fuzzing::seeds()?;
    for seed in &seeds {
        let dir = std::path::Path::new(&root).join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&seed.name), &seed.bytes)?;
    }
    println!("wrote {} seeds under {root}", seeds.len());
    Ok(())
}
