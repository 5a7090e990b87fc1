//! Hand-written conversions between the plan's types (`model`) and their wire form (`proto`):
//! products, and a product's cached state.
//!
//! The wire form carries what the plan does not need (read-only reasons, when and by which
//! run the state was read) and lacks what the plan takes from elsewhere (the product's
//! capabilities, which [`model::state::Capabilities::of`] declares). Empty strings on the
//! wire are absent values in the model.

use model::snapshot::UserId;
use model::state::{
    Account, AccountId, Capabilities, Group, GroupName, Membership, Product, ProductState,
};
use proto::v1;

/// A wire value that has no meaning in the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{value} is not a known product")]
    UnknownProduct { value: i32 },
    #[error("cached account {index} has no id")]
    AccountWithoutId { index: usize },
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

/// The plan's view of a cached state, with the capabilities of [`Capabilities::of`]. An
/// account is managed when the cache says so and names its Keycloak user.
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
        });
    }
    let groups = state
        .groups
        .iter()
        .map(|group| Group {
            name: GroupName::new(group.name.as_str()),
            managed: group.managed,
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
    Ok(ProductState {
        product,
        capabilities: Capabilities::of(product),
        accounts,
        groups,
        memberships,
    })
}

/// The wire form of a model state. The model knows no read-only reasons and no read time,
/// so those are left empty; `run_id` names the run that produced the state.
pub fn state_from_model(state: &ProductState, run_id: &str) -> v1::ProductState {
    v1::ProductState {
        schema_version: v1::SCHEMA_VERSION,
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
            })
            .collect(),
        groups: state
            .groups
            .iter()
            .map(|group| v1::CachedGroup {
                name: group.name.as_str().to_owned(),
                managed: group.managed,
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
        }
    }

    fn wire_state() -> v1::ProductState {
        v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            product: v1::Product::Bitbucket as i32,
            accounts: vec![
                cached("alice", "alice", "kc-1"),
                cached("admin", "admin", ""),
            ],
            groups: vec![
                v1::CachedGroup {
                    name: "devs".to_owned(),
                    managed: true,
                },
                v1::CachedGroup {
                    name: "stash-users".to_owned(),
                    managed: false,
                },
            ],
            memberships: vec![v1::CachedMembership {
                account_id: "alice".to_owned(),
                group: "devs".to_owned(),
            }],
            read_at: None,
            run_id: "run-1".to_owned(),
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
