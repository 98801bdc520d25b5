//! Writes a synthetic city grid as an OSM PBF file, for benchmarks and demos without a
//! downloaded map: `cargo run --example write_grid -- OUT.osm.pbf [ROWS]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: write_grid OUT.osm.pbf [ROWS]")?;
    let rows: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(60);
    pipeline::graph::osm_writer::synthetic_grid(rows, rows, 120.0, 60.17, 24.94).write_pbf(&out)?;
    println!("wrote a {rows}x{rows} grid to {out}");
    Ok(())
}
