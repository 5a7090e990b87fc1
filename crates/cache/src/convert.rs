//! Hand-written conversions between the plan's types (`model`) and their wire form (`proto`):
//! products, a product's cached state, and the changes an applier records in it.
//!
//! The wire form of a state carries what the plan does not need (read-only reasons, when and
//! by which run the state was read). It carries the product's capabilities as its client
//! reported them; a state cached before they were recorded has none, and then the plan gets
//! those of [`model::state::Capabilities::of`]. Empty strings on the wire are absent values in
//! the model.

use model::plan::{AccountFields, AccountRef, Action, Change, ChangeId, ChangeOp, Handover};
use model::snapshot::UserId;
use model::state::{
    Account, AccountId, Capabilities, ConnectorName, Group, GroupName, Lead, LeadTarget,
    Membership, Product, ProductState, Seats,
};
use proto::v1;

/// A wire value that has no meaning in the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{value} is not a known product")]
    UnknownProduct { value: i32 },
    #[error("cached account {index} has no id")]
    AccountWithoutId { index: usize },
    #[error("change {id}: {value} is not a known operation")]
    UnknownOp { id: String, value: i32 },
    #[error("change id {id} is not hex digits")]
    BadChangeId { id: String },
    #[error("change {id} names no account by id")]
    ChangeWithoutAccount { id: String },
    #[error("change {id} carries no account data")]
    ChangeWithoutFields { id: String },
    #[error("change {id} names no group")]
    ChangeWithoutGroup { id: String },
    #[error("change {id} hands a lead over without saying what or to whom")]
    BadHandover { id: String },
}

/// The product of a wire enum value; `PRODUCT_UNSPECIFIED` and unknown values are errors.
pub fn product_from_proto(value: i32) -> Result<Product, ConvertError> {
    match v1::Product::try_from(value) {
        Ok(v1::Product::Jira) => Ok(Product::Jira),
        Ok(v1::Product::Confluence) => Ok(Product::Confluence),
        Ok(v1::Product::Bitbucket) => Ok(Product::Bitbucket),
        Ok(v1::Product::Unspecified) | Err(_) => Err(ConvertError::UnknownProduct { value }),
    }
}

pub fn product_to_proto(product: Product) -> v1::Product {
    match product {
        Product::Jira => v1::Product::Jira,
        Product::Confluence => v1::Product::Confluence,
        Product::Bitbucket => v1::Product::Bitbucket,
    }
}

/// The kind of change of a wire operation; `None` for `CHANGE_OP_UNSPECIFIED`.
pub fn op_from_proto(op: v1::ChangeOp) -> Option<ChangeOp> {
    Some(match op {
        v1::ChangeOp::CreateGroup => ChangeOp::CreateGroup,
        v1::ChangeOp::CreateUser => ChangeOp::CreateUser,
        v1::ChangeOp::LinkUser => ChangeOp::LinkUser,
        v1::ChangeOp::UpdateUser => ChangeOp::UpdateUser,
        v1::ChangeOp::ReactivateUser => ChangeOp::ReactivateUser,
        v1::ChangeOp::AddMembership => ChangeOp::AddMembership,
        v1::ChangeOp::RemoveMembership => ChangeOp::RemoveMembership,
        v1::ChangeOp::DeactivateUser => ChangeOp::DeactivateUser,
        v1::ChangeOp::DeleteUser => ChangeOp::DeleteUser,
        v1::ChangeOp::RemoveGroup => ChangeOp::RemoveGroup,
        v1::ChangeOp::Unspecified => return None,
    })
}

pub fn capabilities_to_proto(capabilities: Capabilities) -> v1::Capabilities {
    v1::Capabilities {
        can_deactivate: capabilities.can_deactivate,
        can_rename: capabilities.can_rename,
    }
}

/// The capabilities a cached state records, or for a state cached before they were recorded,
/// those of [`Capabilities::of`] its product.
pub fn capabilities_from_proto(
    capabilities: Option<&v1::Capabilities>,
    product: Product,
) -> Capabilities {
    match capabilities {
        Some(capabilities) => Capabilities {
            can_deactivate: capabilities.can_deactivate,
            can_rename: capabilities.can_rename,
        },
        None => Capabilities::of(product),
    }
}

/// The plan's view of a cached state, with the capabilities it records (see
/// [`capabilities_from_proto`]). An account is managed when the cache says so and names its
/// Keycloak user.
pub fn state_to_model(state: &v1::ProductState) -> Result<ProductState, ConvertError> {
    let product = product_from_proto(state.product)?;
    let mut accounts = Vec::with_capacity(state.accounts.len());
    for (index, account) in state.accounts.iter().enumerate() {
        if account.id.is_empty() {
            return Err(ConvertError::AccountWithoutId { index });
        }
        let keycloak_user_id = (account.managed && !account.keycloak_user_id.is_empty())
            .then(|| UserId::new(account.keycloak_user_id.as_str()));
        accounts.push(Account {
            id: AccountId::new(account.id.as_str()),
            login: account.login.clone(),
            display_name: account.display_name.clone(),
            email: (!account.email.is_empty()).then(|| account.email.clone()),
            active: account.active,
            keycloak_user_id,
            connector: connector_to_model(&account.connector),
            administrator: account.administrator,
        });
    }
    let groups = state
        .groups
        .iter()
        .map(|group| Group {
            name: GroupName::new(group.name.as_str()),
            managed: group.managed,
            connector: connector_to_model(&group.connector),
        })
        .collect();
    let memberships = state
        .memberships
        .iter()
        .map(|membership| Membership {
            account_id: AccountId::new(membership.account_id.as_str()),
            group: GroupName::new(membership.group.as_str()),
        })
        .collect();
    let leads = state
        .leads
        .iter()
        .filter_map(|lead| {
            Some(Lead {
                account_id: AccountId::new(lead.account_id.as_str()),
                target: lead_target_to_model(lead.target.as_ref()?)?,
            })
        })
        .collect();
    Ok(ProductState {
        product,
        capabilities: capabilities_from_proto(state.capabilities.as_ref(), product),
        accounts,
        groups,
        memberships,
        leads,
        seats: state.seats.map(|seats| Seats {
            used: seats.used,
            limit: seats.limit,
        }),
    })
}

/// The model's form of a wire lead target; `None` for an empty one.
pub fn lead_target_to_model(target: &v1::LeadTarget) -> Option<LeadTarget> {
    match target.target.as_ref()? {
        v1::lead_target::Target::ProjectKey(key) => Some(LeadTarget::Project { key: key.clone() }),
        v1::lead_target::Target::Component(component) => Some(LeadTarget::Component {
            id: component.id.clone(),
            project_key: component.project_key.clone(),
            name: component.name.clone(),
        }),
    }
}

/// The wire form of a lead target.
pub fn lead_target_to_proto(target: &LeadTarget) -> v1::LeadTarget {
    let target = match target {
        LeadTarget::Project { key } => v1::lead_target::Target::ProjectKey(key.clone()),
        LeadTarget::Component {
            id,
            project_key,
            name,
        } => v1::lead_target::Target::Component(v1::LeadComponent {
            id: id.clone(),
            project_key: project_key.clone(),
            name: name.clone(),
        }),
    };
    v1::LeadTarget {
        target: Some(target),
    }
}

/// The wire form of a change's handovers.
pub fn handovers_to_proto(handovers: &[Handover]) -> Vec<v1::LeadHandover> {
    handovers
        .iter()
        .map(|handover| v1::LeadHandover {
            target: Some(lead_target_to_proto(&handover.target)),
            to: handover.to.clone(),
        })
        .collect()
}

/// The model's form of a wire change's handovers; one without a target or a new lead does
/// not convert.
fn handovers_to_model(change: &v1::Change) -> Result<Vec<Handover>, ConvertError> {
    change
        .handovers
        .iter()
        .map(|handover| {
            let target = handover
                .target
                .as_ref()
                .and_then(lead_target_to_model)
                .filter(|_| !handover.to.trim().is_empty())
                .ok_or_else(|| ConvertError::BadHandover {
                    id: change.id.clone(),
                })?;
            Ok(Handover {
                target,
                to: handover.to.clone(),
            })
        })
        .collect()
}

fn connector_to_model(connector: &str) -> Option<ConnectorName> {
    (!connector.is_empty()).then(|| ConnectorName::new(connector))
}

fn connector_from_model(connector: Option<&ConnectorName>) -> String {
    connector
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default()
}

/// The wire form of a model state. The model knows no read-only reasons and no read time,
/// so those are left empty; `run_id` names the run that produced the state.
pub fn state_from_model(state: &ProductState, run_id: &str) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
        journal_seq: 0,
        product: product_to_proto(state.product) as i32,
        accounts: state
            .accounts
            .iter()
            .map(|account| v1::CachedAccount {
                id: account.id.as_str().to_owned(),
                login: account.login.clone(),
                display_name: account.display_name.clone(),
                email: account.email.clone().unwrap_or_default(),
                active: account.active,
                managed: account.is_managed(),
                keycloak_user_id: account
                    .keycloak_user_id
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
                read_only_reason: String::new(),
                connector: connector_from_model(account.connector.as_ref()),
                administrator: account.administrator,
            })
            .collect(),
        groups: state
            .groups
            .iter()
            .map(|group| v1::CachedGroup {
                name: group.name.as_str().to_owned(),
                managed: group.managed,
                connector: connector_from_model(group.connector.as_ref()),
            })
            .collect(),
        memberships: state
            .memberships
            .iter()
            .map(|membership| v1::CachedMembership {
                account_id: membership.account_id.as_str().to_owned(),
                group: membership.group.as_str().to_owned(),
            })
            .collect(),
        read_at: None,
        run_id: run_id.to_owned(),
        capabilities: Some(capabilities_to_proto(state.capabilities)),
        leads: state
            .leads
            .iter()
            .map(|lead| v1::CachedLead {
                account_id: lead.account_id.as_str().to_owned(),
                target: Some(lead_target_to_proto(&lead.target)),
            })
            .collect(),
        seats: state.seats.map(|seats| v1::Seats {
            used: seats.used,
            limit: seats.limit,
        }),
    }
}

/// The model's form of a wire change, as an applier records it in the cached state once the
/// product did it. The wire names an existing account by its id only, so the login of an
/// [`AccountRef::Existing`] is the login before an update and empty otherwise; `active` of
/// the account data has no place in the model.
pub fn change_to_model(change: &v1::Change) -> Result<Change, ConvertError> {
    let id = change
        .id
        .parse::<ChangeId>()
        .map_err(|_| ConvertError::BadChangeId {
            id: change.id.clone(),
        })?;
    let op = v1::ChangeOp::try_from(change.op)
        .ok()
        .and_then(op_from_proto)
        .ok_or_else(|| ConvertError::UnknownOp {
            id: change.id.clone(),
            value: change.op,
        })?;
    let fields = || {
        change.fields.as_ref().map(fields_to_model).ok_or_else(|| {
            ConvertError::ChangeWithoutFields {
                id: change.id.clone(),
            }
        })
    };
    let group = || {
        if change.group.trim().is_empty() {
            return Err(ConvertError::ChangeWithoutGroup {
                id: change.id.clone(),
            });
        }
        Ok(change.group.clone())
    };
    let previous = change
        .previous
        .as_ref()
        .map(fields_to_model)
        .unwrap_or_else(|| fields_to_model(&v1::AccountFields::default()));
    let account = |login: &str| {
        account_ref_to_model(change.account.as_ref(), login).ok_or_else(|| {
            ConvertError::ChangeWithoutAccount {
                id: change.id.clone(),
            }
        })
    };
    let action = match op {
        ChangeOp::CreateGroup => Action::CreateGroup { group: group()? },
        ChangeOp::CreateUser => Action::CreateUser { fields: fields()? },
        ChangeOp::LinkUser => match account("")? {
            AccountRef::Existing { id, .. } => Action::LinkUser {
                id,
                login: fields().map(|fields| fields.login).unwrap_or_default(),
            },
            AccountRef::New { .. } => {
                return Err(ConvertError::ChangeWithoutAccount {
                    id: change.id.clone(),
                });
            }
        },
        ChangeOp::UpdateUser => Action::UpdateUser {
            account: account(&previous.login)?,
            fields: fields()?,
            previous,
        },
        ChangeOp::ReactivateUser => Action::ReactivateUser {
            account: account("")?,
        },
        ChangeOp::AddMembership => Action::AddMembership {
            account: account("")?,
            group: group()?,
        },
        ChangeOp::RemoveMembership => Action::RemoveMembership {
            account: account("")?,
            group: group()?,
        },
        ChangeOp::DeactivateUser => Action::DeactivateUser {
            account: account("")?,
            handovers: handovers_to_model(change)?,
        },
        ChangeOp::DeleteUser => Action::DeleteUser {
            account: account("")?,
            handovers: handovers_to_model(change)?,
        },
        ChangeOp::RemoveGroup => Action::RemoveGroup { group: group()? },
    };
    Ok(Change {
        id,
        product: product_from_proto(change.product)?,
        keycloak_user_id: (!change.keycloak_user_id.is_empty())
            .then(|| UserId::new(change.keycloak_user_id.as_str())),
        action,
        reason: change.reason.clone(),
    })
}

fn fields_to_model(fields: &v1::AccountFields) -> AccountFields {
    AccountFields {
        login: fields.login.clone(),
        display_name: fields.display_name.clone(),
        email: (!fields.email.is_empty()).then(|| fields.email.clone()),
    }
}

/// The account a wire reference names; `login` is the login of an account named by id.
fn account_ref_to_model(account: Option<&v1::AccountRef>, login: &str) -> Option<AccountRef> {
    match account?.r#ref.as_ref()? {
        v1::account_ref::Ref::AccountId(id) if !id.is_empty() => Some(AccountRef::Existing {
            id: AccountId::new(id.as_str()),
            login: login.to_owned(),
        }),
        v1::account_ref::Ref::NewLogin(login) if !login.is_empty() => Some(AccountRef::New {
            login: login.clone(),
        }),
        v1::account_ref::Ref::AccountId(_) | v1::account_ref::Ref::NewLogin(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(id: &str, login: &str, keycloak_user_id: &str) -> v1::CachedAccount {
        v1::CachedAccount {
            id: id.to_owned(),
            login: login.to_owned(),
            display_name: format!("{login} Example"),
            email: format!("{login}@example.com"),
            active: true,
            managed: !keycloak_user_id.is_empty(),
            keycloak_user_id: keycloak_user_id.to_owned(),
            read_only_reason: String::new(),
            connector: if keycloak_user_id.is_empty() {
                String::new()
            } else {
                "corp".to_owned()
            },
            administrator: login == "admin",
        }
    }

    fn wire_state() -> v1::ProductState {
        v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            journal_seq: 0,
            product: v1::Product::Bitbucket as i32,
            accounts: vec![
                cached("alice", "alice", "kc-1"),
                cached("admin", "admin", ""),
            ],
            groups: vec![
                v1::CachedGroup {
                    name: "devs".to_owned(),
                    managed: true,
                    connector: "corp".to_owned(),
                },
                v1::CachedGroup {
                    name: "stash-users".to_owned(),
                    managed: false,
                    connector: String::new(),
                },
            ],
            memberships: vec![v1::CachedMembership {
                account_id: "alice".to_owned(),
                group: "devs".to_owned(),
            }],
            read_at: None,
            run_id: "run-1".to_owned(),
            capabilities: Some(capabilities_to_proto(Capabilities::of(Product::Bitbucket))),
            leads: vec![
                v1::CachedLead {
                    account_id: "k1".to_owned(),
                    target: Some(lead_target_to_proto(&LeadTarget::Project {
                        key: "ABC".to_owned(),
                    })),
                },
                v1::CachedLead {
                    account_id: "k1".to_owned(),
                    target: Some(lead_target_to_proto(&LeadTarget::Component {
                        id: "10001".to_owned(),
                        project_key: "ABC".to_owned(),
                        name: "Backend".to_owned(),
                    })),
                },
            ],
            seats: Some(v1::Seats {
                used: 7,
                limit: Some(10),
            }),
        }
    }

    #[test]
    fn a_wire_state_converts_to_the_model_and_back_unchanged() {
        let wire = wire_state();
        let state = state_to_model(&wire).expect("converts");
        assert_eq!(state.product, Product::Bitbucket);
        assert_eq!(state.capabilities, Capabilities::of(Product::Bitbucket));
        assert!(state.accounts[0].is_managed());
        assert!(!state.accounts[1].is_managed());
        assert_eq!(state_from_model(&state, "run-1"), wire);
    }

    #[test]
    fn a_state_has_the_capabilities_its_client_reported_else_the_products_usual_ones() {
        let mut wire = wire_state();
        let reported = Capabilities {
            can_deactivate: true,
            can_rename: false,
        };
        assert_ne!(reported, Capabilities::of(Product::Bitbucket));
        wire.capabilities = Some(capabilities_to_proto(reported));
        let state = state_to_model(&wire).expect("converts");
        assert_eq!(state.capabilities, reported);
        assert_eq!(state_from_model(&state, "run-1"), wire);

        wire.capabilities = None;
        let state = state_to_model(&wire).expect("converts");
        assert_eq!(state.capabilities, Capabilities::of(Product::Bitbucket));
    }

    #[test]
    fn an_account_marked_managed_without_a_keycloak_user_is_not_managed() {
        let mut wire = wire_state();
        wire.accounts[1].managed = true;
        wire.accounts[0].email.clear();
        let state = state_to_model(&wire).expect("converts");
        assert!(!state.accounts[1].is_managed());
        assert_eq!(state.accounts[0].email, None);
    }

    #[test]
    fn an_unknown_product_or_an_account_without_id_does_not_convert() {
        let mut wire = wire_state();
        wire.product = 0;
        assert_eq!(
            state_to_model(&wire),
            Err(ConvertError::UnknownProduct { value: 0 })
        );
        let mut wire = wire_state();
        wire.accounts[1].id.clear();
        assert_eq!(
            state_to_model(&wire),
            Err(ConvertError::AccountWithoutId { index: 1 })
        );
    }

    fn wire_change(op: v1::ChangeOp) -> v1::Change {
        v1::Change {
            streamed_part: Default::default(),
            id: "00c0ffee00000001".to_owned(),
            product: v1::Product::Jira as i32,
            op: op as i32,
            keycloak_user_id: "kc-1".to_owned(),
            account: Some(v1::AccountRef {
                r#ref: Some(v1::account_ref::Ref::AccountId("JIRAUSER1".to_owned())),
            }),
            fields: Some(v1::AccountFields {
                login: "alice".to_owned(),
                display_name: "Alice".to_owned(),
                email: String::new(),
                active: true,
            }),
            previous: Some(v1::AccountFields {
                login: "alice.old".to_owned(),
                display_name: "Alice Old".to_owned(),
                email: "alice@old.example".to_owned(),
                active: true,
            }),
            group: "devs".to_owned(),
            reason: "a test".to_owned(),
            handovers: Vec::new(),
        }
    }

    #[test]
    fn every_wire_change_converts_to_the_models_with_its_kind_and_data() {
        let wire_ops: Vec<v1::ChangeOp> = (1..=10)
            .filter_map(|value| v1::ChangeOp::try_from(value).ok())
            .collect();
        let ops: Vec<Option<ChangeOp>> = wire_ops.iter().map(|op| op_from_proto(*op)).collect();
        assert_eq!(
            ops,
            ChangeOp::ALL.map(Some),
            "the wire and the model agree on the order"
        );
        for wire_op in wire_ops {
            let change = change_to_model(&wire_change(wire_op)).expect("converts");
            assert_eq!(Some(change.op()), op_from_proto(wire_op));
            assert_eq!(change.id.to_string(), "00c0ffee00000001");
            assert_eq!(change.product, Product::Jira);
            assert_eq!(change.keycloak_user_id, Some(UserId::new("kc-1")));
            assert_eq!(change.reason, "a test");
        }
        let update = change_to_model(&wire_change(v1::ChangeOp::UpdateUser)).expect("converts");
        assert_eq!(
            update.action,
            Action::UpdateUser {
                account: AccountRef::Existing {
                    id: AccountId::new("JIRAUSER1"),
                    login: "alice.old".to_owned(),
                },
                previous: AccountFields {
                    login: "alice.old".to_owned(),
                    display_name: "Alice Old".to_owned(),
                    email: Some("alice@old.example".to_owned()),
                },
                fields: AccountFields {
                    login: "alice".to_owned(),
                    display_name: "Alice".to_owned(),
                    email: None,
                },
            }
        );
        let mut create = wire_change(v1::ChangeOp::AddMembership);
        create.account = Some(v1::AccountRef {
            r#ref: Some(v1::account_ref::Ref::NewLogin("olivia".to_owned())),
        });
        assert_eq!(
            change_to_model(&create).expect("converts").action,
            Action::AddMembership {
                account: AccountRef::New {
                    login: "olivia".to_owned()
                },
                group: "devs".to_owned(),
            }
        );
        assert_eq!(op_from_proto(v1::ChangeOp::Unspecified), None);
    }

    #[test]
    fn a_wire_change_missing_what_its_kind_needs_does_not_convert() {
        let id = "00c0ffee00000001".to_owned();
        let mut change = wire_change(v1::ChangeOp::Unspecified);
        assert_eq!(
            change_to_model(&change),
            Err(ConvertError::UnknownOp {
                id: id.clone(),
                value: 0
            })
        );
        change.op = v1::ChangeOp::AddMembership as i32;
        change.group = " ".to_owned();
        assert_eq!(
            change_to_model(&change),
            Err(ConvertError::ChangeWithoutGroup { id: id.clone() })
        );
        change.op = v1::ChangeOp::DeleteUser as i32;
        change.account = None;
        assert_eq!(
            change_to_model(&change),
            Err(ConvertError::ChangeWithoutAccount { id: id.clone() })
        );
        change.op = v1::ChangeOp::CreateUser as i32;
        change.fields = None;
        assert_eq!(
            change_to_model(&change),
            Err(ConvertError::ChangeWithoutFields { id: id.clone() })
        );
        change.id = "c1?".to_owned();
        assert_eq!(
            change_to_model(&change),
            Err(ConvertError::BadChangeId {
                id: "c1?".to_owned()
            })
        );
    }

    #[test]
    fn every_product_converts_both_ways() {
        for product in [Product::Jira, Product::Confluence, Product::Bitbucket] {
            assert_eq!(
                product_from_proto(product_to_proto(product) as i32),
                Ok(product)
            );
        }
    }
}
