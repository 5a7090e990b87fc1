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
/// total, connector and the sets it depends on (no schema version, nothing stored), followed by the encoding of its
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
    let found = change_set_digest(set);
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
