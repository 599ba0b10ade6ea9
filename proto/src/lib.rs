//! playhead's wire contract, shared by the node, the gateway, the CLI and the tests.
//!
//! - [`v1`]: the generated `playhead.v1` messages and gRPC services.
//! - [`ids`]: validated identifier newtypes (`[A-Za-z0-9_-]{1,128}`).
//! - [`partition`]: the FNV-1a partitioning the broker's subject transform also applies.
//! - [`subjects`]: the one module that builds and parses every NATS subject and stream name.
//! - [`headers`]: NATS header names of the contract.
//! - [`codec`]: payload decoding, protobuf or canonical proto3 JSON.

pub mod codec;
pub mod headers;
pub mod ids;
mod json_wire;
pub mod partition;
pub mod subjects;
mod wire_json;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("playhead.v1");
}

/// The encoded `FileDescriptorSet` of every playhead proto file (for reflection and JSON).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/playhead_descriptor.bin"));
