//! What makes a change set trustworthy to an applier: its digest, and the manifest of
//! digests the planner stored for the run.
//!
//! The planner cuts an APPLY plan into change sets, stores a [`v1::ChangeSetManifest`]
//! (one [`change_set_digest`] per set) next to the plan and names it in `PlanReady`; the
//! control plane records that reference in the run (`Run.change_sets`). An applier that
//! receives a change set asks the control plane for the run, loads the manifest the run
//! names (its checksum checked by [`crate::Bus::get_object`]) and applies the set only when
//! the manifest lists the set's own digest. A change set published by anyone else — for a
//! held run, another run, or with one change altered — lists no digest and is
//! dead-lettered. The trust this buys rests on who may write the plans bucket and publish
//! `PlanReady`: the planner alone in `deploy/nats/accounts.conf`.

use prost::Message;
use proto::v1;
use sha2::{Digest, Sha256};

/// The hex SHA-256 of `set`'s canonical form: the encoding of its run, product, sequence,
/// total, connector, the sets it depends on and its part (no schema version, nothing stored), followed by the encoding of its
/// changes. A stored set is digested after its changes are loaded, so a set digests the
/// same however it travelled.
pub fn change_set_digest(set: &v1::ChangeSet) -> String {
    let canonical = v1::ChangeSet {
        schema_version: 0,
        run_id: set.run_id.clone(),
        product: set.product,
        sequence: set.sequence,
        total_sets: set.total_sets,
        changes: Vec::new(),
        stored: None,
        connector: set.connector.clone(),
        depends_on: set.depends_on,
        part: set.part,
    };
    let mut hasher = Sha256::new();
    hasher.update(canonical.encode_to_vec());
    // The changes one by one, as the repeated field 6 would encode them, without copying
    // them into the canonical set.
    for change in &set.changes {
        let mut field = Vec::with_capacity(change.encoded_len() + 8);
        prost::encoding::message::encode(6, change, &mut field);
        hasher.update(&field);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// [`change_set_digest`] computed from the set's wire bytes (`set_bytes`, the encoded
/// [`v1::ChangeSet`] as it arrived) and, for a set whose changes were stored, from the
/// stored set's bytes (`stored_bytes`, decompressed), without decoding them: the top-level
/// fields but the schema version (1), the changes (6) and the stored reference (7), in
/// wire order, then every change field. For a set whose every field this build knows it
/// equals [`change_set_digest`]; for a set from a newer planner it also covers the fields
/// this build does not know, which decoding would drop, so the digest the newer planner
/// listed still matches during a rolling upgrade.
pub fn change_set_digest_of_wire(
    set_bytes: &[u8],
    stored_bytes: Option<&[u8]>,
) -> Result<String, WireError> {
    const SCHEMA_VERSION: u32 = 1;
    const CHANGES: u32 = 6;
    const STORED: u32 = 7;
    let mut hasher = Sha256::new();
    let mut changes = Vec::new();
    for (tag, field) in top_level_fields(set_bytes)? {
        match tag {
            SCHEMA_VERSION | STORED => {}
            CHANGES => changes.push(field),
            _ => hasher.update(field),
        }
    }
    if let Some(stored) = stored_bytes {
        // The stored set's changes replace any inline ones, as the applier loads them.
        changes = top_level_fields(stored)?
            .into_iter()
            .filter(|(tag, _)| *tag == CHANGES)
            .map(|(_, field)| field)
            .collect();
    }
    for field in changes {
        hasher.update(field);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Why a change set's wire bytes could not be digested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the change set is not valid protobuf: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("a field of the change set runs past its end")]
    Truncated,
    #[error("the change set holds a protobuf group, which keysync never writes")]
    Group,
}

/// The top-level fields of an encoded message, each as its tag and its whole bytes (key
/// included), in wire order.
fn top_level_fields(mut bytes: &[u8]) -> Result<Vec<(u32, &[u8])>, WireError> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let whole = bytes;
        let mut rest = bytes;
        let (tag, wire_type) = decode_key(&mut rest)?;
        let body = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest)?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                usize::try_from(decode_varint(&mut rest)?).map_err(|_| WireError::Truncated)?
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError::Group);
            }
        };
        if rest.len() < body {
            return Err(WireError::Truncated);
        }
        let used = whole.len() - rest.len() + body;
        fields.push((tag, &whole[..used]));
        bytes = &whole[used..];
    }
    Ok(fields)
}

/// The manifest of `sets`, the change sets of run `run_id`.
pub fn manifest<'a>(
    run_id: &str,
    sets: impl IntoIterator<Item = &'a v1::ChangeSet>,
) -> v1::ChangeSetManifest {
    v1::ChangeSetManifest {
        schema_version: v1::SCHEMA_VERSION,
        run_id: run_id.to_owned(),
        sets: sets
            .into_iter()
            .map(|set| v1::ChangeSetDigest {
                product: set.product,
                sequence: set.sequence,
                sha256: change_set_digest(set),
            })
            .collect(),
    }
}

/// Why a change set may not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the manifest is of run {found}, not of run {expected}")]
    OtherRun { expected: String, found: String },
    #[error("the run's manifest lists no change set {sequence} of this product")]
    Unlisted { sequence: u32 },
    #[error(
        "change set {sequence} differs from the one the planner published for the run \
         (digest {found}, expected {expected})"
    )]
    Altered {
        sequence: u32,
        expected: String,
        found: String,
    },
}

/// Checks `set` against `manifest`: the same run, and the digest listed for the set's
/// product and sequence.
pub fn check(manifest: &v1::ChangeSetManifest, set: &v1::ChangeSet) -> Result<(), Refusal> {
    check_digest(manifest, set, change_set_digest(set))
}

/// [`check`] with the set's digest computed by the caller, e.g. by
/// [`change_set_digest_of_wire`] from the bytes it received.
pub fn check_digest(
    manifest: &v1::ChangeSetManifest,
    set: &v1::ChangeSet,
    found: String,
) -> Result<(), Refusal> {
    if manifest.run_id != set.run_id {
        return Err(Refusal::OtherRun {
            expected: set.run_id.clone(),
            found: manifest.run_id.clone(),
        });
    }
    let listed = manifest
        .sets
        .iter()
        .find(|listed| listed.product == set.product && listed.sequence == set.sequence)
        .ok_or(Refusal::Unlisted {
            sequence: set.sequence,
        })?;
    if !listed.sha256.eq_ignore_ascii_case(&found) {
        return Err(Refusal::Altered {
            sequence: set.sequence,
            expected: listed.sha256.clone(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sequence: u32, logins: &[&str]) -> v1::ChangeSet {
        v1::ChangeSet {
            part: Default::default(),
            schema_version: v1::SCHEMA_VERSION,
            run_id: "run-1".to_owned(),
            product: v1::Product::Jira as i32,
            sequence,
            total_sets: 2,
            changes: logins
                .iter()
                .map(|login| v1::Change {
                    id: format!("id-{login}"),
                    product: v1::Product::Jira as i32,
                    reason: format!("create {login}"),
                    ..Default::default()
                })
                .collect(),
            stored: None,
            connector: "corp".to_owned(),
            depends_on: None,
        }
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_set_with_its_changes_inline() {
        let set = set(0, &["ana", "bo"]);
        let mut header = set.clone();
        header.schema_version = 0;
        header.changes.clear();
        let changes = v1::ChangeSet {
            changes: set.changes.clone(),
            ..Default::default()
        };
        let mut bytes = header.encode_to_vec();
        bytes.extend(changes.encode_to_vec());
        let expected: String = Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(change_set_digest(&set), expected);
    }

    #[test]
    fn the_wire_digest_equals_the_digest_and_covers_fields_this_build_does_not_know() {
        let set = set(0, &["ana", "bo"]);
        let wire = set.encode_to_vec();
        assert_eq!(
            change_set_digest_of_wire(&wire, None).expect("well-formed"),
            change_set_digest(&set)
        );
        // Stored: the message has no changes, the stored set has them.
        let mut announced = set.clone();
        announced.changes.clear();
        announced.stored = Some(v1::ObjectRef::default());
        assert_eq!(
            change_set_digest_of_wire(&announced.encode_to_vec(), Some(&wire)).expect("ok"),
            change_set_digest(&set)
        );
        // A newer planner's field 900 (a varint) on the set: decoding drops it, the wire
        // digest keeps it, so it differs from the digest of the decoded set, as it differs
        // for the newer planner that listed it.
        let mut newer = wire.clone();
        prost::encoding::uint32::encode(900, &7, &mut newer);
        let decoded = v1::ChangeSet::decode(newer.as_slice()).expect("decodes");
        assert_eq!(change_set_digest(&decoded), change_set_digest(&set));
        assert_ne!(
            change_set_digest_of_wire(&newer, None).expect("ok"),
            change_set_digest(&set)
        );
        assert!(change_set_digest_of_wire(&wire[..wire.len() - 1], None).is_err());
    }

    #[test]
    fn a_listed_set_passes_and_any_other_is_refused() {
        let sets = [set(0, &["ana"]), set(1, &["bo"])];
        let manifest = manifest("run-1", &sets);
        assert_eq!(check(&manifest, &sets[0]), Ok(()));
        assert_eq!(check(&manifest, &sets[1]), Ok(()));

        let mut altered = sets[1].clone();
        altered.changes[0].reason = "create mallory".to_owned();
        assert!(matches!(
            check(&manifest, &altered),
            Err(Refusal::Altered { sequence: 1, .. })
        ));
        let mut moved = sets[1].clone();
        moved.sequence = 0;
        assert!(matches!(
            check(&manifest, &moved),
            Err(Refusal::Altered { sequence: 0, .. })
        ));
        assert_eq!(
            check(&manifest, &set(2, &["eve"])),
            Err(Refusal::Unlisted { sequence: 2 })
        );
        let mut other_run = sets[0].clone();
        other_run.run_id = "run-2".to_owned();
        assert!(matches!(
            check(&manifest, &other_run),
            Err(Refusal::OtherRun { .. })
        ));
        let mut other_product = sets[0].clone();
        other_product.product = v1::Product::Confluence as i32;
        assert_eq!(
            check(&manifest, &other_product),
            Err(Refusal::Unlisted { sequence: 0 })
        );
    }
}
