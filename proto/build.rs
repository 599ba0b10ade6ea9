//! Generates the `playhead.v1` types and services from `proto/` in pure Rust (protox, no protoc).

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "playhead/v1/station.proto",
    "playhead/v1/player.proto",
    "playhead/v1/playout.proto",
    "playhead/v1/import.proto",
    "playhead/v1/show.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    // Kept for gRPC reflection and for the proto3-JSON codec.
    std::fs::write(
        out_dir.join("playhead_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    let mut config = prost_build::Config::new();
    // `prost::Name` lets the JSON codec find each message's descriptor by its full name.
    config.enable_type_names();
    tonic_prost_build::configure()
        // Methods of capabilities not built yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds_with_config(descriptors, config)?;
    Ok(())
}
