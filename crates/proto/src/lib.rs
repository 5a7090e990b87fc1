//! Generated protobuf types: the bus messages and the gRPC control API of `proto/keysync/v1`.
//!
//! This crate is a wire boundary. Plan types live in `model`; each service converts
//! between them and these messages by hand, so compatibility concerns stay here.

/// Version 1 of the keysync protocol.
pub mod v1 {
    tonic::include_proto!("keysync.v1");

    /// The `schema_version` every bus message of this build carries: a major and a minor
    /// revision of the schema in one number, so that a rolling upgrade never strands a run.
    ///
    /// - **Minor revisions** (compatible: fields added, never renumbered, retyped or given a
    ///   new meaning; an enum value added that an older reader may treat as unknown) count
    ///   up within a major: major 1 is versions `1..=999`, and every message already stored
    ///   carries 1, "major 1, revision 1". A reader accepts every version of its major,
    ///   newer ones too: prost skips the fields it does not know ("unknown fields
    ///   tolerated"), so a newer producer's messages are read by an older consumer instead
    ///   of being dead-lettered. Bump `SCHEMA_VERSION` by one for a minor revision (useful
    ///   for logs and for a reader that wants to know a field is meaningful).
    /// - **A major revision** (breaking: a field removed or changed, a meaning changed) is
    ///   signalled by jumping to the first version of the next major: major `m` is versions
    ///   `(m - 1) * SCHEMA_MAJOR_STRIDE ..= m * SCHEMA_MAJOR_STRIDE - 1` (so major 2 starts
    ///   at 1000; [`schema_major`]). A reader refuses — dead-letters, naming the message and
    ///   both versions — every message of another major. Deploy a major change the way a
    ///   new protocol is deployed: readers of both majors first, then the writers.
    ///
    /// Version 0 is never valid: it is protobuf's default, a message that says nothing of
    /// its version.
    pub const SCHEMA_VERSION: u32 = 1;

    /// How many versions one major revision spans (see [`SCHEMA_VERSION`]).
    pub const SCHEMA_MAJOR_STRIDE: u32 = 1000;

    /// The major revision of this build's messages.
    pub const SCHEMA_MAJOR: u32 = schema_major(SCHEMA_VERSION);

    /// The major revision `version` belongs to: 1 for `1..=999`, 2 for `1000..=1999`, and
    /// so on (0 for version 0, which no message may carry).
    pub const fn schema_major(version: u32) -> u32 {
        if version == 0 {
            0
        } else {
            version / SCHEMA_MAJOR_STRIDE + 1
        }
    }
}

/// The encoded `FileDescriptorSet` of every keysync proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keysync_descriptor");
