//! Every message of `proto/keysync/v1` survives an encode/decode round trip with
//! every field set, and no message is left out of this test.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::{FileDescriptorSet, Timestamp};
use proto::v1::*;

fn timestamp() -> Option<Timestamp> {
    Some(Timestamp {
        seconds: 1_795_000_000,
        nanos: 123_000_000,
    })
}

fn object_ref() -> ObjectRef {
    ObjectRef {
        bucket: "keysync-snapshots".into(),
        key: "01JZ/snapshot.pb.zst".into(),
        sha256: "ab".repeat(32),
        size: 4096,
    }
}

fn fields(login: &str) -> AccountFields {
    AccountFields {
        login: login.into(),
        display_name: "Zoë Ångström".into(),
        email: format!("{login}@example.org"),
        active: true,
    }
}

fn change() -> Change {
    Change {
        streamed_part: 2,
        id: "c0ffee".into(),
        product: Product::Jira as i32,
        op: ChangeOp::UpdateUser as i32,
        keycloak_user_id: "4f1c".into(),
        account: Some(AccountRef {
            r#ref: Some(account_ref::Ref::AccountId("JIRAUSER10000".into())),
        }),
        fields: Some(fields("zoe")),
        previous: Some(fields("zoe.old")),
        group: "staff".into(),
        reason: "email changed from a@x to b@x".into(),
        handovers: Vec::new(),
    }
}

fn plan_summary() -> PlanSummary {
    PlanSummary {
        streamed_sets: 3,
        product: Product::Bitbucket as i32,
        changes_by_op: HashMap::from([("CHANGE_OP_CREATE_USER".into(), 3)]),
        conflicts: 1,
        hold_reason: "would deactivate 60 of 100 managed accounts".into(),
        safety: Some(safety_counts()),
        state_fingerprint: "9f86d081884c7d65".into(),
        skipped_users: 4,
        unchanged_users: 1200,
        seats: None,
    }
}

fn safety_counts() -> SafetyCounts {
    SafetyCounts {
        losing_access: 60,
        managed_accounts: 100,
        removed_memberships: 120,
        managed_memberships: 300,
        removed_groups: 1,
        links: 2,
        first_run: true,
    }
}

fn change_result() -> ChangeResult {
    ChangeResult {
        schema_version: SCHEMA_VERSION,
        run_id: "01JZRUN".into(),
        change_id: "c0ffee".into(),
        product: Product::Confluence as i32,
        outcome: ChangeOutcome::Failed as i32,
        message: "no licence seats left".into(),
        product_status: 402,
        account_id: "ff80".into(),
        finished_at: timestamp(),
        attempts: 3,
    }
}

fn conflict() -> Conflict {
    Conflict {
        product: Product::Jira as i32,
        login: "jdoe".into(),
        keycloak_user_ids: vec!["u1".into(), "u2".into()],
        reason: "two Keycloak users map to login jdoe".into(),
        usernames: vec!["jdoe".into(), "j.doe".into()],
    }
}

fn diagnostic() -> Diagnostic {
    Diagnostic {
        product: Product::Confluence as i32,
        kind: DiagnosticKind::MissingData as i32,
        subject: "zoe".into(),
        message: "no usable email, which a new account needs; not created".into(),
        keycloak_user_id: "4f1c".into(),
        username: "Zoe".into(),
    }
}

fn cached_account() -> CachedAccount {
    CachedAccount {
        id: "JIRAUSER10000".into(),
        login: "zoe".into(),
        display_name: "Zoë Ångström".into(),
        email: "zoe@example.org".into(),
        active: true,
        managed: true,
        keycloak_user_id: "4f1c".into(),
        read_only_reason: "LDAP directory".into(),
        connector: "corp".into(),
        administrator: true,
    }
}

fn event_trigger() -> EventTrigger {
    EventTrigger {
        user_ids: vec!["u1".into(), "u2".into()],
        group_ids: vec!["g1".into()],
        events: 3,
        full_sync_reason: String::new(),
    }
}

fn capabilities() -> Capabilities {
    Capabilities {
        can_deactivate: true,
        can_rename: true,
    }
}

fn run() -> Run {
    Run {
        streamed_parts: 8,
        run_id: "01JZRUN".into(),
        mode: RunMode::Apply as i32,
        state: RunState::Held as i32,
        trigger: RunTrigger::Schedule as i32,
        connector: "corp".into(),
        products: vec![Product::Jira as i32, Product::Bitbucket as i32],
        created_at: timestamp(),
        updated_at: timestamp(),
        finished_at: timestamp(),
        reason: "held by the safety limit".into(),
        progress: vec![ProductProgress {
            product: Product::Jira as i32,
            planned: 10,
            applied: 7,
            already_done: 1,
            skipped: 1,
            failed: 1,
        }],
        plan: vec![plan_summary()],
        requested_by: "cli".into(),
        approved_by: "ann".into(),
        approval_reason: "the reorganisation of 2 December".into(),
        approved_at: timestamp(),
        hold_expires_at: timestamp(),
        change_sets: Some(object_ref()),
        event: None,
    }
}

/// Encodes, decodes and compares one message; returns its proto name for the coverage check.
fn lead() -> CachedLead {
    CachedLead {
        account_id: "JIRAUSER10100".to_owned(),
        target: Some(LeadTarget {
            target: Some(lead_target::Target::Component(LeadComponent {
                id: "10001".to_owned(),
                project_key: "ABC".to_owned(),
                name: "Backend".to_owned(),
            })),
        }),
    }
}

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(name: &str, message: M) -> String {
    assert_ne!(message, M::default(), "{name}: the sample must set fields");
    let bytes = message.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("a message we encoded decodes");
    assert_eq!(decoded, message, "{name} changed in a round trip");
    format!("keysync.v1.{name}")
}

#[test]
fn every_message_survives_a_round_trip() {
    let snapshot = Snapshot {
        parts: 4,
        schema_version: SCHEMA_VERSION,
        run_id: "01JZRUN".into(),
        connector: "corp".into(),
        realm: "acme".into(),
        fetched_at: timestamp(),
        users: vec![KeycloakUser {
            id: "4f1c".into(),
            username: "zoë".into(),
            email: "zoe@example.org".into(),
            first_name: "Zoë".into(),
            last_name: "Ångström".into(),
            enabled: true,
            email_verified: true,
            attributes: HashMap::from([(
                "department".into(),
                StringList {
                    values: vec!["R&D".into(), "Ops".into()],
                },
            )]),
            federation_link: "ldap-1".into(),
            created_timestamp: 1_700_000_000_000,
        }],
        groups: vec![KeycloakGroup {
            id: "g1".into(),
            name: "staff".into(),
            path: "/org/staff".into(),
            parent_id: "g0".into(),
        }],
        memberships: vec![KeycloakMembership {
            user_id: "4f1c".into(),
            group_id: "g1".into(),
        }],
        deleted_user_ids: Vec::new(),
        delta: false,
        groups_included: false,
        named_user_ids: Vec::new(),
        named_listed: false,
    };
    let covered: BTreeSet<String> = [
        check("ObjectRef", object_ref()),
        check("AccountFields", fields("zoe")),
        check(
            "AccountRef",
            AccountRef {
                r#ref: Some(account_ref::Ref::NewLogin("new.user".into())),
            },
        ),
        check("Change", change()),
        check(
            "RunRequested",
            RunRequested {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                mode: RunMode::Simulate as i32,
                products: vec![Product::Confluence as i32],
                connector: "corp".into(),
                requested_at: timestamp(),
                requested_by: "schedule".into(),
                event: Some(event_trigger()),
            },
        ),
        check("EventTrigger", event_trigger()),
        check(
            "EventsObserved",
            EventsObserved {
                schema_version: SCHEMA_VERSION,
                connector: "corp".into(),
                trigger: Some(EventTrigger {
                    full_sync_reason: "the follower's first start".into(),
                    ..event_trigger()
                }),
                observed_at: timestamp(),
            },
        ),
        check(
            "StringList",
            StringList {
                values: vec!["a".into()],
            },
        ),
        check("KeycloakUser", snapshot.users[0].clone()),
        check("KeycloakGroup", snapshot.groups[0].clone()),
        check("KeycloakMembership", snapshot.memberships[0].clone()),
        check("Snapshot", snapshot),
        check(
            "SnapshotReady",
            SnapshotReady {
                realm_users: 9,
                part: 1,
                parts: 5,
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                connector: "corp".into(),
                snapshot: Some(object_ref()),
                users: 1,
                groups: 2,
                memberships: 3,
                fetched_at: timestamp(),
                mode: RunMode::Apply as i32,
                products: vec![Product::Jira as i32],
                base: None,
            },
        ),
        check(
            "SnapshotFailed",
            SnapshotFailed {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                connector: "corp".into(),
                reason: "keycloak answered 503 for /users".into(),
            },
        ),
        check("PlanSummary", plan_summary()),
        check(
            "PlanReady",
            PlanReady {
                part: 6,
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                products: vec![plan_summary()],
                plan: Some(object_ref()),
                held: true,
                hold_reason: "empty snapshot".into(),
                change_sets: Some(object_ref()),
            },
        ),
        check(
            "ChangeSetDigest",
            ChangeSetDigest {
                product: Product::Confluence as i32,
                sequence: 0,
                sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            },
        ),
        check(
            "ChangeSetManifest",
            ChangeSetManifest {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                sets: vec![ChangeSetDigest {
                    product: Product::Jira as i32,
                    sequence: 3,
                    sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                        .into(),
                }],
            },
        ),
        check(
            "PlanFailed",
            PlanFailed {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                reason: "state cache unreadable".into(),
            },
        ),
        check(
            "ChangeSet",
            ChangeSet {
                part: 7,
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                product: Product::Jira as i32,
                sequence: 2,
                total_sets: 5,
                changes: vec![change()],
                stored: Some(object_ref()),
                connector: "corp".into(),
                depends_on: Some(2),
            },
        ),
        check("ChangeResult", change_result()),
        check("Conflict", conflict()),
        check(
            "StateReady",
            StateReady {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                product: Product::Jira as i32,
                state: Some(object_ref()),
                accounts: 10,
                groups: 2,
                memberships: 30,
            },
        ),
        check(
            "StateFailed",
            StateFailed {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                product: Product::Bitbucket as i32,
                reason: "401 from bitbucket".into(),
            },
        ),
        check(
            "Plan",
            Plan {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                mode: RunMode::Apply as i32,
                products: vec![plan_summary()],
                changes: vec![change(), change()],
                held: true,
                hold_reason: "would delete 12 % of managed accounts".into(),
                conflicts: vec![conflict()],
                connector: "corp".into(),
                change_set_size: 500,
                diagnostics: vec![diagnostic()],
            },
        ),
        check(
            "RunApproved",
            RunApproved {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                approved_by: "ops".into(),
                comment: "expected".into(),
            },
        ),
        check(
            "RunCancelled",
            RunCancelled {
                schema_version: SCHEMA_VERSION,
                run_id: "01JZRUN".into(),
                reason: "wrong realm".into(),
            },
        ),
        check("CachedAccount", cached_account()),
        check(
            "CachedGroup",
            CachedGroup {
                name: "jira-software-users".into(),
                managed: true,
                connector: "corp".into(),
            },
        ),
        check(
            "CachedMembership",
            CachedMembership {
                account_id: "JIRAUSER10000".into(),
                group: "staff".into(),
            },
        ),
        check(
            "ProductState",
            ProductState {
                schema_version: SCHEMA_VERSION,
                journal_seq: 42,
                product: Product::Jira as i32,
                accounts: vec![cached_account()],
                groups: vec![CachedGroup {
                    name: "staff".into(),
                    managed: false,
                    connector: String::new(),
                }],
                memberships: vec![CachedMembership {
                    account_id: "JIRAUSER10000".into(),
                    group: "staff".into(),
                }],
                read_at: timestamp(),
                run_id: "01JZRUN".into(),
                capabilities: Some(capabilities()),
                leads: Vec::new(),
                seats: None,
            },
        ),
        check("Capabilities", capabilities()),
        check(
            "ProductProgress",
            ProductProgress {
                product: Product::Jira as i32,
                planned: 1,
                applied: 1,
                already_done: 0,
                skipped: 0,
                failed: 0,
            },
        ),
        check("Run", run()),
        check(
            "StartSyncRequest",
            StartSyncRequest {
                mode: RunMode::Apply as i32,
                products: vec![Product::Jira as i32],
                connector: "corp".into(),
            },
        ),
        check(
            "GetRunRequest",
            GetRunRequest {
                run_id: "01JZRUN".into(),
            },
        ),
        check(
            "WatchRunRequest",
            WatchRunRequest {
                run_id: "01JZRUN".into(),
            },
        ),
        check(
            "ListRunsRequest",
            ListRunsRequest {
                page_size: 50,
                page_token: "next".into(),
                states: vec![RunState::Held as i32],
                triggers: Vec::new(),
            },
        ),
        check(
            "ListRunsResponse",
            ListRunsResponse {
                runs: vec![run()],
                next_page_token: "next".into(),
            },
        ),
        check(
            "ListChangesRequest",
            ListChangesRequest {
                run_id: "01JZRUN".into(),
                product: Product::Jira as i32,
                op: ChangeOp::DeactivateUser as i32,
                outcome: ChangeOutcome::Applied as i32,
                user: "zoe".into(),
                page_size: 100,
                page_token: "p2".into(),
            },
        ),
        check(
            "ChangeRecord",
            ChangeRecord {
                change: Some(change()),
                outcome: ChangeOutcome::Skipped as i32,
                message: "read-only account".into(),
                product_status: 200,
                finished_at: timestamp(),
            },
        ),
        check(
            "ListChangesResponse",
            ListChangesResponse {
                changes: vec![ChangeRecord {
                    change: Some(change()),
                    outcome: ChangeOutcome::Planned as i32,
                    message: String::new(),
                    product_status: 0,
                    finished_at: None,
                }],
                next_page_token: "p3".into(),
                total: 250,
            },
        ),
        check("Diagnostic", diagnostic()),
        check(
            "ListDiagnosticsRequest",
            ListDiagnosticsRequest {
                run_id: "01JZRUN".into(),
                product: Product::Jira as i32,
                kind: DiagnosticKind::OutOfScope as i32,
                user: "zoe".into(),
                page_size: 100,
                page_token: "p2".into(),
            },
        ),
        check(
            "ListDiagnosticsResponse",
            ListDiagnosticsResponse {
                conflicts: vec![conflict()],
                diagnostics: vec![diagnostic()],
                next_page_token: "p3".into(),
                total: 12,
            },
        ),
        check(
            "ApproveRunRequest",
            ApproveRunRequest {
                run_id: "01JZRUN".into(),
                comment: "expected: the contractors left".into(),
            },
        ),
        check(
            "CancelRunRequest",
            CancelRunRequest {
                run_id: "01JZRUN".into(),
                reason: "wrong realm".into(),
            },
        ),
        check(
            "TestConnectionRequest",
            TestConnectionRequest {
                targets: vec!["jira".into()],
            },
        ),
        check(
            "ConnectionCheck",
            ConnectionCheck {
                target: "keycloak:corp".into(),
                ok: false,
                message: "missing realm-management role view-users".into(),
                details: HashMap::from([("users".into(), "1234".into())]),
            },
        ),
        check(
            "TestConnectionResponse",
            TestConnectionResponse {
                checks: vec![ConnectionCheck {
                    target: "jira".into(),
                    ok: true,
                    message: "ok".into(),
                    details: HashMap::new(),
                }],
            },
        ),
        check(
            "ReportResultsRequest",
            ReportResultsRequest {
                run_id: "01JZRUN".into(),
                product: Product::Jira as i32,
                results: vec![change_result()],
            },
        ),
        check("SafetyCounts", safety_counts()),
        check(
            "ReportResultsResponse",
            ReportResultsResponse { recorded: 7 },
        ),
        check("CachedLead", lead()),
        check(
            "LeadComponent",
            LeadComponent {
                id: "10001".to_owned(),
                project_key: "ABC".to_owned(),
                name: "Backend".to_owned(),
            },
        ),
        check(
            "LeadTarget",
            LeadTarget {
                target: Some(lead_target::Target::ProjectKey("ABC".to_owned())),
            },
        ),
        check(
            "LeadHandover",
            LeadHandover {
                target: lead().target,
                to: "jira-admin".to_owned(),
            },
        ),
        check(
            "Seats",
            Seats {
                used: 7,
                limit: Some(10),
            },
        ),
        check(
            "StateRecord",
            StateRecord {
                change: Some(change()),
                account_id: Some("10001".into()),
                created_id: None,
            },
        ),
        check(
            "StateRecords",
            StateRecords {
                schema_version: SCHEMA_VERSION,
                product: Product::Jira as i32,
                run_id: "01JZRUN1".into(),
                connector: "corp".into(),
                records: vec![StateRecord {
                    change: Some(change()),
                    account_id: None,
                    created_id: Some("10002".into()),
                }],
            },
        ),
        check(
            "SeatUse",
            SeatUse {
                needed: 12,
                used: 7,
                limit: None,
                left_out: 0,
            },
        ),
    ]
    .into_iter()
    .collect();

    // Every top-level message in the descriptor set must be in the list above, and map
    // entries (generated, nested) are the only ones left out.
    let descriptors =
        FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let declared: BTreeSet<String> = descriptors
        .file
        .iter()
        .filter(|file| file.package() == "keysync.v1")
        .flat_map(|file| file.message_type.iter())
        .map(|message| format!("keysync.v1.{}", message.name()))
        .collect();
    let missing: Vec<_> = declared.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "messages without a round-trip test: {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&declared).collect();
    assert!(
        unknown.is_empty(),
        "tested names that are not in the protos: {unknown:?}"
    );
}

#[test]
fn enums_keep_their_wire_values() {
    // Stored runs and results outlive a release: these numbers are part of the contract.
    assert_eq!(ChangeOp::CreateGroup as i32, 1);
    assert_eq!(ChangeOp::RemoveGroup as i32, 10);
    assert_eq!(RunState::Cancelled as i32, 8);
    assert_eq!(ChangeOutcome::Failed as i32, 5);
    assert_eq!(DiagnosticKind::MissingData as i32, 2);
    assert_eq!(DiagnosticKind::OutOfScope as i32, 9);
    assert_eq!(
        ChangeOp::try_from(8).ok(),
        Some(ChangeOp::DeactivateUser),
        "op 8 decodes to deactivate"
    );
}

proptest::proptest! {
    #[test]
    fn any_change_result_round_trips(
        run_id in ".*",
        change_id in "[a-f0-9]{0,16}",
        outcome in 0i32..6,
        status in proptest::num::u32::ANY,
        message in ".*",
    ) {
        let result = ChangeResult {
            schema_version: SCHEMA_VERSION,
            run_id,
            change_id,
            outcome,
            product_status: status,
            message,
            ..ChangeResult::default()
        };
        let decoded = ChangeResult::decode(result.encode_to_vec().as_slice()).expect("decodes");
        proptest::prop_assert_eq!(decoded, result);
    }
}
