//! R6: the bus messages from outside, fuzzed. Every message type a service decodes
//! ([`bus::decode`]) gets arbitrary bytes, protobuf-shaped input (wrong wire types, lengths
//! past the end, huge varints, deep nesting) and valid messages with mutated bytes; the
//! change sets that decode also go through the digest and the manifest check
//! ([`bus::integrity`]). No case may panic, run past a second or allocate past a bound (see
//! `test_support::fuzz`). `KEYSYNC_FUZZ_CASES` sets the number of cases (default 256; `make fuzz`
//! runs 20000).

use bus::{BusMessage, DecodeError, integrity};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;
use proto::v1;

use test_support::fuzz as harness;

#[global_allocator]
static ALLOCATOR: harness::Counting = harness::Counting;

/// Decodes `payload` as every bus message type; answers how many decoded.
fn decode_every_type(payload: &[u8]) -> usize {
    fn one<M: BusMessage>(payload: &[u8]) -> usize {
        match bus::decode::<M>(payload) {
            Ok(message) => {
                // What decoded re-encodes and decodes again.
                let again = bus::decode::<M>(&bus::encode(&message));
                if let Err(error) = again {
                    panic!("{} did not decode again: {error}", M::KIND);
                }
                1
            }
            Err(DecodeError::Malformed { .. } | DecodeError::UnknownVersion { .. }) => 0,
        }
    }
    one::<v1::RunRequested>(payload)
        + one::<v1::Snapshot>(payload)
        + one::<v1::SnapshotReady>(payload)
        + one::<v1::SnapshotFailed>(payload)
        + one::<v1::PlanReady>(payload)
        + one::<v1::PlanFailed>(payload)
        + one::<v1::ChangeSet>(payload)
        + one::<v1::ChangeSetManifest>(payload)
        + one::<v1::ChangeResult>(payload)
        + one::<v1::Plan>(payload)
        + one::<v1::RunApproved>(payload)
        + one::<v1::RunCancelled>(payload)
        + one::<v1::ProductState>(payload)
        + one::<v1::StateReady>(payload)
        + one::<v1::StateFailed>(payload)
}

/// A change set and a manifest decoded from `payload` whatever their schema version, digested
/// and checked against each other and against `manifest`.
fn check_integrity(payload: &[u8], manifest: &v1::ChangeSetManifest) {
    let Ok(set) = v1::ChangeSet::decode(payload) else {
        return;
    };
    let digest = integrity::change_set_digest(&set);
    assert_eq!(digest.len(), 64, "{digest}");
    assert_eq!(
        digest,
        integrity::change_set_digest(&set),
        "not deterministic"
    );
    let own = integrity::manifest(&set.run_id, [&set]);
    assert_eq!(
        integrity::check(&own, &set),
        Ok(()),
        "its own manifest refuses it"
    );
    let _ = integrity::check(manifest, &set);
    if let Ok(other) = v1::ChangeSetManifest::decode(payload) {
        let _ = integrity::check(&other, &set);
    }
}

/// One protobuf field as generated: right or wrong.
#[derive(Clone, Debug)]
enum Field {
    Varint(u32, u64),
    Fixed64(u32, u64),
    Fixed32(u32, u32),
    Bytes(u32, Vec<u8>),
    Nested(u32, Vec<Field>),
    /// A length prefix that promises more (or far more) than follows.
    Overlong(u32, u64, Vec<u8>),
    /// Wire types 3, 4 (groups, which proto3 does not have), 6 and 7 (none).
    OddWireType(u32, u8),
    /// A varint of more than ten bytes.
    EndlessVarint(u32, u8),
}

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type & 7));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode_fields(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        match field {
            Field::Varint(number, value) => {
                key(out, *number, 0);
                varint(out, *value);
            }
            Field::Fixed64(number, value) => {
                key(out, *number, 1);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Field::Fixed32(number, value) => {
                key(out, *number, 5);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Field::Bytes(number, bytes) => {
                key(out, *number, 2);
                varint(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Field::Nested(number, fields) => {
                let mut inner = Vec::new();
                encode_fields(fields, &mut inner);
                key(out, *number, 2);
                varint(out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
            Field::Overlong(number, claimed, bytes) => {
                key(out, *number, 2);
                varint(out, *claimed);
                out.extend_from_slice(bytes);
            }
            Field::OddWireType(number, wire_type) => key(out, *number, *wire_type),
            Field::EndlessVarint(number, length) => {
                key(out, *number, 0);
                out.extend(std::iter::repeat_n(0xff, usize::from(*length)));
            }
        }
    }
}

/// Mostly the field numbers the messages use, sometimes 0 (invalid) or the largest.
fn field_number() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 1u32..=20,
        1 => Just(0u32),
        1 => Just((1u32 << 29) - 1),
        1 => any::<u32>(),
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..4,
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        Just(1u64 << 63),
        any::<u64>(),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    let leaf = prop_oneof![
        (field_number(), number()).prop_map(|(n, v)| Field::Varint(n, v)),
        (field_number(), any::<u64>()).prop_map(|(n, v)| Field::Fixed64(n, v)),
        (field_number(), any::<u32>()).prop_map(|(n, v)| Field::Fixed32(n, v)),
        (field_number(), vec(any::<u8>(), 0..48)).prop_map(|(n, b)| Field::Bytes(n, b)),
        (field_number(), short()).prop_map(|(n, s)| Field::Bytes(n, s.into_bytes())),
        (field_number(), number(), vec(any::<u8>(), 0..16))
            .prop_map(|(n, c, b)| Field::Overlong(n, c, b)),
        (
            field_number(),
            prop_oneof![Just(3u8), Just(4), Just(6), Just(7)]
        )
            .prop_map(|(n, w)| Field::OddWireType(n, w)),
        (field_number(), 9u8..16).prop_map(|(n, l)| Field::EndlessVarint(n, l)),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        (field_number(), vec(inner, 0..8)).prop_map(|(n, fields)| Field::Nested(n, fields))
    })
}

/// Fields, starting with a valid schema version most of the time so that decoding goes on
/// past the version check.
fn wire_message() -> impl Strategy<Value = Vec<u8>> {
    (prop::option::weighted(0.8, 1u64..=1), vec(field(), 0..12)).prop_map(|(version, fields)| {
        let mut out = Vec::new();
        if let Some(version) = version {
            encode_fields(&[Field::Varint(1, version)], &mut out);
        }
        encode_fields(&fields, &mut out);
        out
    })
}

/// `depth` messages, each the only field `number` of the one around it: past prost's
/// recursion limit of 100 at the deep end.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    (field_number(), 0usize..400, vec(any::<u8>(), 0..8)).prop_map(|(number, depth, core)| {
        let mut message = core;
        for _ in 0..depth {
            let mut outer = Vec::new();
            key(&mut outer, number, 2);
            varint(&mut outer, message.len() as u64);
            outer.extend_from_slice(&message);
            message = outer;
        }
        let mut out = Vec::new();
        encode_fields(&[Field::Varint(1, 1)], &mut out);
        out.extend_from_slice(&message);
        out
    })
}

/// Mostly short text, sometimes very long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => short(),
        1 => (0usize..100_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn short() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..16).prop_map(String::from_iter)
}

fn change() -> impl Strategy<Value = v1::Change> {
    (
        short(),
        any::<i32>(),
        any::<i32>(),
        short(),
        text(),
        (short(), short(), any::<bool>()),
    )
        .prop_map(
            |(id, product, op, group, reason, (login, email, active))| v1::Change {
                id,
                product,
                op,
                group,
                reason,
                fields: Some(v1::AccountFields {
                    login,
                    display_name: String::new(),
                    email,
                    active,
                }),
                ..Default::default()
            },
        )
}

fn change_set() -> impl Strategy<Value = v1::ChangeSet> {
    (
        (1u32..=1, text(), any::<i32>(), any::<u32>(), any::<u32>()),
        vec(change(), 0..16),
        text(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(
                (schema_version, run_id, product, sequence, total_sets),
                changes,
                connector,
                depends_on,
            )| {
                v1::ChangeSet {
                    part: Default::default(),
                    schema_version,
                    run_id,
                    product,
                    sequence,
                    total_sets,
                    changes,
                    stored: None,
                    connector,
                    depends_on,
                }
            },
        )
}

fn snapshot() -> impl Strategy<Value = v1::Snapshot> {
    (
        text(),
        vec((text(), text(), any::<bool>(), any::<i64>()), 0..16),
        vec((text(), text()), 0..16),
    )
        .prop_map(|(run_id, users, memberships)| v1::Snapshot {
            schema_version: v1::SCHEMA_VERSION,
            run_id,
            users: users
                .into_iter()
                .map(
                    |(id, username, enabled, created_timestamp)| v1::KeycloakUser {
                        id,
                        username,
                        enabled,
                        created_timestamp,
                        ..Default::default()
                    },
                )
                .collect(),
            memberships: memberships
                .into_iter()
                .map(|(user_id, group_id)| v1::KeycloakMembership { user_id, group_id })
                .collect(),
            ..Default::default()
        })
}

/// One edit of an encoded message.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// A byte run copied to another place (a field twice, a length twice).
    Splice(usize, usize, usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let mutation = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), vec(any::<u8>(), 1..12)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..64, any::<usize>())
            .prop_map(|(from, len, to)| Mutation::Splice(from, len, to)),
    ];
    vec(mutation, 1..6)
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Flip(at, mask) if len > 0 => bytes[at % len] ^= mask,
            Mutation::Flip(..) => {}
            Mutation::Truncate(at) => bytes.truncate(at % (len + 1)),
            Mutation::Insert(at, inserted) => {
                let at = at % (len + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Mutation::Splice(from, run, to) if len > 0 => {
                let from = from % len;
                let copied = bytes[from..(from + run).min(len)].to_vec();
                let to = to % (len + 1);
                bytes.splice(to..to, copied);
            }
            Mutation::Splice(..) => {}
        }
    }
    bytes
}

#[test]
fn fuzz_harness_fails_a_panic_a_hang_and_a_large_allocation() {
    harness::self_test();
}

proptest! {
    #![proptest_config(harness::config())]

    #[test]
    fn fuzz_bus_decode_arbitrary_bytes(payload in vec(any::<u8>(), 0..4096)) {
        let len = payload.len();
        harness::guarded("bus::decode of arbitrary bytes", len, move || {
            decode_every_type(&payload);
            check_integrity(&payload, &v1::ChangeSetManifest::default());
        })?;
    }

    #[test]
    fn fuzz_bus_decode_protobuf_shaped(payload in prop_oneof![3 => wire_message(), 1 => deeply_nested()]) {
        let len = payload.len();
        harness::guarded("bus::decode of protobuf-shaped bytes", len, move || {
            decode_every_type(&payload);
            check_integrity(&payload, &v1::ChangeSetManifest::default());
        })?;
    }

    #[test]
    fn fuzz_bus_change_set_mutated(set in change_set(), edits in mutations()) {
        let valid = bus::encode(&set).to_vec();
        let mutated = mutate(valid.clone(), &edits);
        let len = valid.len() + mutated.len();
        harness::guarded("bus::decode and integrity of a mutated change set", len, move || {
            let decoded = bus::decode::<v1::ChangeSet>(&valid);
            assert_eq!(decoded.as_ref(), Ok(&set), "a valid change set did not decode to itself");
            let manifest = integrity::manifest(&set.run_id, [&set]);
            assert_eq!(integrity::check(&manifest, &set), Ok(()));
            decode_every_type(&mutated);
            check_integrity(&mutated, &manifest);
            if let Ok(altered) = v1::ChangeSet::decode(mutated.as_slice())
                && altered != set
            {
                // A set that differs in what the digest covers is refused.
                let covered = |s: &v1::ChangeSet| {
                    (s.run_id.clone(), s.product, s.sequence, s.total_sets,
                     s.changes.clone(), s.connector.clone(), s.depends_on)
                };
                if covered(&altered) != covered(&set) {
                    assert!(integrity::check(&manifest, &altered).is_err(), "an altered set passed");
                }
            }
        })?;
    }

    #[test]
    fn fuzz_bus_snapshot_mutated(snapshot in snapshot(), edits in mutations()) {
        let valid = bus::encode(&snapshot).to_vec();
        let mutated = mutate(valid, &edits);
        let len = mutated.len();
        harness::guarded("bus::decode of a mutated snapshot", len, move || {
            decode_every_type(&mutated);
        })?;
    }
}
