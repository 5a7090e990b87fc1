//! Properties of the conversions an applier and the planner make at their edge: a cached
//! state read into the model and written back is the same state, with every field of every
//! account, group and membership, and the capabilities its client reported.

use cache::convert::{state_from_model, state_to_model};
use model::snapshot::UserId;
use model::state::{
    Account, AccountId, Capabilities, Group, GroupName, Membership, Product, ProductState,
};
use proptest::prelude::*;
use proptest::sample::select;
use proto::v1;

fn text(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(values).prop_map(str::to_owned)
}

fn model_account() -> impl Strategy<Value = Account> {
    (
        text(&["k1", "k2", "JIRAUSER10000", "ärger"]),
        text(&["alice", "Älice", "bob", ""]),
        text(&["Alice Example", "", "Zoë Ångström"]),
        prop::option::of(text(&["alice@example.com", "ALICE@x.io"])),
        any::<bool>(),
        prop::option::of(text(&["kc-1", "kc-2"])),
    )
        .prop_map(|(id, login, display_name, email, active, user)| Account {
            id: AccountId::new(id),
            login,
            display_name,
            email,
            active,
            keycloak_user_id: user.map(UserId::new),
            administrator: false,
            connector: None,
        })
}

fn model_state() -> impl Strategy<Value = ProductState> {
    (
        select(vec![Product::Jira, Product::Confluence, Product::Bitbucket]),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(model_account(), 0..5),
        prop::collection::vec(
            (text(&["devs", "Devs ", "jira-users", ""]), any::<bool>()),
            0..4,
        ),
        prop::collection::vec(
            (text(&["k1", "k2", "k9"]), text(&["devs", "DEVS", "x"])),
            0..6,
        ),
    )
        .prop_map(
            |(product, can_deactivate, can_rename, accounts, groups, memberships)| ProductState {
                product,
                capabilities: Capabilities {
                    can_deactivate,
                    can_rename,
                },
                accounts,
                groups: groups
                    .into_iter()
                    .map(|(name, managed)| Group {
                        name: GroupName::new(name),
                        managed,
                        connector: None,
                    })
                    .collect(),
                memberships: memberships
                    .into_iter()
                    .map(|(account_id, group)| Membership {
                        account_id: AccountId::new(account_id),
                        group: GroupName::new(group),
                    })
                    .collect(),
                leads: Vec::new(),
                seats: None,
            },
        )
}

/// Any cached account, also the odd ones: managed without a Keycloak user, or a Keycloak user
/// on an account keysync does not manage.
fn wire_account() -> impl Strategy<Value = v1::CachedAccount> {
    (
        (
            text(&["k1", "k2", "JIRAUSER10000"]),
            text(&["alice", "Älice", ""]),
            text(&["Alice Example", ""]),
            text(&["alice@example.com", ""]),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            text(&["kc-1", ""]),
            text(&["from LDAP", ""]),
        ),
    )
        .prop_map(
            |(
                (id, login, display_name, email),
                (active, managed, keycloak_user_id, read_only_reason),
            )| v1::CachedAccount {
                id,
                login,
                display_name,
                email,
                active,
                managed,
                keycloak_user_id,
                read_only_reason,
                administrator: false,
                connector: String::new(),
            },
        )
}

fn wire_state() -> impl Strategy<Value = v1::ProductState> {
    (
        select(vec![
            v1::Product::Jira,
            v1::Product::Confluence,
            v1::Product::Bitbucket,
        ]),
        prop::option::of((any::<bool>(), any::<bool>())),
        prop::collection::vec(wire_account(), 0..5),
        prop::collection::vec((text(&["devs", "Devs"]), any::<bool>()), 0..3),
        prop::collection::vec((text(&["k1", "k9"]), text(&["devs", "x"])), 0..4),
    )
        .prop_map(
            |(product, capabilities, accounts, groups, memberships)| v1::ProductState {
                schema_version: v1::SCHEMA_VERSION,
                journal_seq: 0,
                product: product as i32,
                accounts,
                groups: groups
                    .into_iter()
                    .map(|(name, managed)| v1::CachedGroup {
                        name,
                        managed,
                        connector: String::new(),
                    })
                    .collect(),
                memberships: memberships
                    .into_iter()
                    .map(|(account_id, group)| v1::CachedMembership { account_id, group })
                    .collect(),
                read_at: None,
                run_id: "run-1".to_owned(),
                capabilities: capabilities.map(|(can_deactivate, can_rename)| v1::Capabilities {
                    can_deactivate,
                    can_rename,
                }),
                leads: Vec::new(),
                seats: None,
            },
        )
}

/// The fingerprint as first defined: the digest of the encoding of a sorted copy of the
/// state without its time, run and journal position.
fn fingerprint_of_a_sorted_copy(state: &v1::ProductState) -> String {
    use prost::Message;
    use sha2::Digest;

    let mut canonical = state.clone();
    canonical.read_at = None;
    canonical.journal_seq = 0;
    canonical.run_id.clear();
    canonical
        .accounts
        .sort_by(|left, right| left.id.cmp(&right.id));
    canonical
        .groups
        .sort_by(|left, right| left.name.cmp(&right.name));
    canonical.memberships.sort_by(|left, right| {
        (&left.account_id, &left.group).cmp(&(&right.account_id, &right.group))
    });
    let digest = sha2::Sha256::digest(canonical.encode_to_vec());
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The fingerprint written field by field is the one a sorted copy gives, so plans held
    /// before it was written this way can still be approved.
    #[test]
    fn the_fingerprint_is_the_digest_of_a_sorted_copy(
        mut state in wire_state(),
        journal_seq in any::<u64>(),
        seats in prop::option::of((0u64..5, prop::option::of(0u64..5))),
        leads in prop::collection::vec(text(&["k1", "k9"]), 0..3),
        schema_version in 0u32..3,
    ) {
        state.journal_seq = journal_seq;
        state.schema_version = schema_version;
        state.read_at = Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 });
        state.seats = seats.map(|(used, limit)| v1::Seats { used, limit });
        state.leads = leads
            .into_iter()
            .map(|account_id| v1::CachedLead { account_id, target: None })
            .collect();
        prop_assert_eq!(cache::fingerprint(&state), fingerprint_of_a_sorted_copy(&state));
    }

    /// The model's form of a followed state, which a plan reads, is the state a load
    /// answers converted to the model, and fingerprints as that state does (read-only
    /// reasons, capabilities and all): a held delta's fingerprint is the one an approval
    /// compares with the cached state's.
    #[test]
    fn a_followed_states_model_form_is_the_loaded_states(wire in wire_state()) {
        prop_assume!(wire.accounts.iter().all(|account| !account.id.is_empty()));
        let product = cache::convert::product_from_proto(wire.product).expect("a product");
        let working = cache::working::Working::new(product, wire).expect("reads");
        let loaded = working.to_state("run-2");
        let model = working.to_model_state("run-2");
        let converted = state_to_model(&loaded);
        prop_assert_eq!(Ok(&model.state), converted.as_ref());
        prop_assert_eq!(model.fingerprint(), cache::fingerprint(&loaded));
        let owned = working.into_model_state("run-2");
        prop_assert_eq!(owned.fingerprint(), cache::fingerprint(&loaded));
    }

    /// A model state written to the cache and read back is the same state.
    #[test]
    fn a_model_state_survives_the_cache(state in model_state()) {
        let wire = state_from_model(&state, "run-1");
        prop_assert_eq!(state_to_model(&wire), Ok(state));
    }

    /// A cached state read into the model and written back keeps every field the model holds;
    /// the read-only reasons and the read time (which only the wire holds) are left empty, an
    /// account is managed only with a Keycloak user, as the plan reads it, and the capabilities
    /// are those the state records, else the product's usual ones.
    #[test]
    fn a_cached_state_survives_the_model(wire in wire_state()) {
        let state = state_to_model(&wire).expect("converts");
        let back = state_from_model(&state, &wire.run_id);
        let product = cache::convert::product_from_proto(wire.product).expect("a product");
        let expected = v1::ProductState {
            accounts: wire
                .accounts
                .iter()
                .map(|account| {
                    let managed = account.managed && !account.keycloak_user_id.is_empty();
                    v1::CachedAccount {
                        managed,
                        keycloak_user_id: if managed {
                            account.keycloak_user_id.clone()
                        } else {
                            String::new()
                        },
                        read_only_reason: String::new(),
                        ..account.clone()
                    }
                })
                .collect(),
            capabilities: Some(wire.capabilities.unwrap_or_else(|| {
                cache::convert::capabilities_to_proto(Capabilities::of(product))
            })),
            ..wire.clone()
        };
        prop_assert_eq!(back, expected);
    }
}
