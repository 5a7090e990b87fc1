//! Example tests of `apply` one change at a time ([`Applied::apply_one`]), as an applier records
//! the changes the product did, and of the apply phases the plan's order gives.

mod fixture;

use fixture::{account, jira, managed, membership, product_group};
use model::apply::Applied;
use model::plan::{AccountFields, AccountRef, Action, Change, ChangeId, ChangeOp};
use model::snapshot::UserId;
use model::state::{AccountId, Product};

fn change(user: Option<&str>, action: Action) -> Change {
    Change {
        id: ChangeId::from_u64(1),
        product: Product::Jira,
        keycloak_user_id: user.map(UserId::new),
        action,
        reason: String::new(),
    }
}

fn fields(login: &str, email: Option<&str>) -> AccountFields {
    AccountFields {
        login: login.to_owned(),
        display_name: format!("{login} Example"),
        email: email.map(str::to_owned),
    }
}

fn existing(id: &str) -> AccountRef {
    AccountRef::Existing {
        id: AccountId::new(id),
        login: String::new(),
    }
}

fn no_id(_: &Change) -> AccountId {
    panic!("no account is created")
}

#[test]
fn changes_applied_one_at_a_time_record_what_they_did() {
    let mut applied = Applied::new(jira(vec![account("k1", "bob")], vec![], vec![]));
    applied.apply_one(
        &change(
            None,
            Action::CreateGroup {
                group: "Ärger".to_owned(),
            },
        ),
        no_id,
    );
    let create = change(
        Some("kc-alice"),
        Action::CreateUser {
            fields: fields("Älice", Some("alice@example.com")),
        },
    );
    applied.apply_one(&create, |_| AccountId::new("k2"));
    let link = Action::LinkUser {
        id: AccountId::new("k1"),
        login: "bob".to_owned(),
    };
    applied.apply_one(&change(Some("kc-bob"), link), no_id);
    for (account, group) in [
        (
            AccountRef::New {
                login: "älice".to_owned(),
            },
            "ärger",
        ),
        (existing("k2"), "ÄRGER "),
        (existing("k1"), "ärger"),
    ] {
        let add = Action::AddMembership {
            account,
            group: group.to_owned(),
        };
        applied.apply_one(&change(None, add), no_id);
    }
    let remove = Action::RemoveMembership {
        account: existing("k1"),
        group: "ÄRGER".to_owned(),
    };
    applied.apply_one(&change(None, remove), no_id);

    assert_eq!(
        applied
            .account_by_login("ÄLICE")
            .map(|account| account.id.as_str()),
        Some("k2"),
        "logins compare in Unicode lower case"
    );
    assert_eq!(
        applied.account("k1").map(|account| account.login.as_str()),
        Some("bob")
    );
    assert!(applied.account("k3").is_none());
    let state = applied.into_state();
    assert!(state.accounts.iter().all(|account| account.is_managed()));
    assert_eq!(state.memberships, [membership("k2", "ärger")]);
    assert_eq!(state.groups, [product_group("Ärger", true)]);
}

#[test]
fn creating_an_account_with_an_id_the_state_has_replaces_it() {
    // A change set applied again: the product answers "already done" with the account's id.
    let state = jira(vec![managed("k2", "alice", "kc-alice")], vec![], vec![]);
    let mut applied = Applied::new(state);
    let create = change(
        Some("kc-alice"),
        Action::CreateUser {
            fields: fields("alice", Some("alice@example.com")),
        },
    );
    applied.apply_one(&create, |_| AccountId::new("k2"));
    let add = Action::AddMembership {
        account: AccountRef::New {
            login: "alice".to_owned(),
        },
        group: "devs".to_owned(),
    };
    applied.apply_one(&change(None, add), no_id);
    let state = applied.into_state();
    assert_eq!(state.accounts.len(), 1);
    assert_eq!(state.accounts[0].display_name, "alice Example");
    assert_eq!(state.memberships, [membership("k2", "devs")]);
}

#[test]
fn linking_a_managed_account_hands_it_to_the_new_keycloak_user() {
    // A Keycloak user deleted and re-created: the account follows its login to the new user.
    let mut applied = Applied::new(jira(vec![managed("k1", "ann", "kc-old")], vec![], vec![]))
        .for_connector(Some(model::state::ConnectorName::new("corp")));
    let link = Action::LinkUser {
        id: AccountId::new("k1"),
        login: "ann".to_owned(),
    };
    applied.apply_one(&change(Some("kc-new"), link), no_id);
    let ann = applied.account("k1").expect("still there");
    assert_eq!(ann.keycloak_user_id, Some(UserId::new("kc-new")));
    assert_eq!(
        ann.connector.as_ref().map(|owner| owner.as_str()),
        Some("corp")
    );
}

#[test]
fn creating_a_group_that_is_there_makes_it_managed() {
    let state = jira(vec![], vec![product_group("Devs", false)], vec![]);
    let mut applied = Applied::new(state);
    let create = Action::CreateGroup {
        group: "devs".to_owned(),
    };
    applied.apply_one(&change(None, create), no_id);
    assert_eq!(applied.into_state().groups, [product_group("Devs", true)]);
}

#[test]
fn an_update_without_an_email_keeps_the_accounts_email() {
    let mut applied = Applied::new(jira(vec![account("k1", "bob")], vec![], vec![]));
    let update = Action::UpdateUser {
        account: existing("k1"),
        previous: fields("bob", None),
        fields: fields("robert", None),
    };
    applied.apply_one(&change(None, update), no_id);
    assert!(applied.account_by_login("bob").is_none(), "renamed");
    let robert = applied.account_by_login("Robert").expect("renamed");
    assert_eq!(robert.email.as_deref(), Some("bob@example.com"));
}

#[test]
fn changes_naming_no_account_here_or_another_product_change_nothing() {
    let state = jira(
        vec![account("k1", "bob")],
        vec![product_group("devs", true)],
        vec![membership("k1", "devs")],
    );
    let mut applied = Applied::new(state.clone());
    for action in [
        Action::DeleteUser {
            account: existing("k9"),
            handovers: Vec::new(),
        },
        Action::AddMembership {
            account: AccountRef::New {
                login: "bob".to_owned(),
            },
            group: "devs".to_owned(),
        },
        Action::DeactivateUser {
            account: existing("k9"),
            handovers: Vec::new(),
        },
    ] {
        applied.apply_one(&change(None, action), no_id);
    }
    let mut other = change(
        None,
        Action::RemoveGroup {
            group: "devs".to_owned(),
        },
    );
    other.product = Product::Confluence;
    applied.apply_one(&other, no_id);
    assert_eq!(applied.into_state(), state);
}

#[test]
fn apply_phases_follow_the_plan_order_with_deactivate_and_delete_together() {
    let phases: Vec<usize> = ChangeOp::ALL.iter().map(|op| op.phase()).collect();
    assert_eq!(phases, [0, 1, 2, 3, 4, 5, 6, 7, 7, 8]);
    assert_eq!(ChangeOp::PHASES, 9);
    assert!(
        ChangeOp::ALL
            .windows(2)
            .all(|pair| pair[0] < pair[1] && pair[0].phase() <= pair[1].phase())
    );
}

#[test]
fn a_change_id_reads_back_from_its_text() {
    let id = ChangeId::from_u64(0x00c0_ffee_1234_5678);
    assert_eq!(id.to_string(), "00c0ffee12345678");
    assert_eq!(id.to_string().parse::<ChangeId>(), Ok(id));
    assert!("not hex".parse::<ChangeId>().is_err());
}
