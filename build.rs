//! Compiles `schemas/pipeline.proto` into Rust with prost, using protox so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=schemas/pipeline.proto");
    let descriptors = protox::compile(["schemas/pipeline.proto"], ["schemas"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
