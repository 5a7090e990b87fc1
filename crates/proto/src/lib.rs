//! Generated protobuf types: the bus messages and the gRPC control API of `proto/keysync/v1`.
//!
//! This crate is a wire boundary. Plan types live in `model`; each service converts
//! between them and these messages by hand, so compatibility concerns stay here.

/// Version 1 of the keysync protocol.
pub mod v1 {
    tonic::include_proto!("keysync.v1");

    /// The current `schema_version` of every bus message. A consumer dead-letters a
    /// message whose version it does not know.
    pub const SCHEMA_VERSION: u32 = 1;
}

/// The encoded `FileDescriptorSet` of every keysync proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keysync_descriptor");
