//! Generates the Rust types for `proto/keysync/v1` with the vendored protoc, so no
//! system protoc is needed, and writes the descriptor set that reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { env::set_var("PROTOC", protoc) };
    }
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["common.proto", "bus.proto", "control.proto"]
        .map(|name| proto_root.join("keysync/v1").join(name));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptor_path = PathBuf::from(env::var("OUT_DIR")?).join("keysync_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(&files, &[proto_root])?;
    Ok(())
}
