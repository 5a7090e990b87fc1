//! A cached state while changes are recorded in it ([`Working`]): by the applier while it
//! applies a change set, and by every reader of the cache as it replays the product's state
//! journal on the state's base ([`crate::Cache`]). The state is the model's, and each change
//! is recorded with the model's own rules ([`Applied::apply_one`]); only the conversion to
//! and from the wire happens here.

use std::collections::HashMap;

use model::apply::Applied;
use model::plan::Action;
use model::state::{Account, AccountId, Product, ProductState};
use proto::v1::{self, account_ref::Ref};

use crate::Error;

/// The cached state while a change set is applied: what the changes that succeeded did,
/// written back to the cache at the end of the set. Lookups by id and by login are what
/// the applier needs to name accounts to the product.
///
/// The state is the model's, converted from the cached one; what only the wire holds (the
/// accounts' read-only reasons, the schema version, when the state was read and the
/// capabilities it records) is kept aside and put back by [`Working::into_state`].
pub struct Working {
    applied: Applied,
    /// The cached state without its accounts, groups and memberships.
    envelope: v1::ProductState,
    /// The read-only reason of each account that has one, by product id.
    read_only: HashMap<String, String>,
    /// What [`Working::record`] took, in order, for the product's state journal.
    recorded: Vec<v1::StateRecord>,
}

impl Working {
    /// The working state of a cached state of `product`; a cached state the model cannot
    /// read (an account without an id) is an error.
    pub fn new(product: Product, state: v1::ProductState) -> Result<Working, Error> {
        Working::for_connector(product, state, "")
    }

    /// [`Working::new`], recording `connector` (the change set's; empty: none) as the owner
    /// of the accounts and groups the changes create or link.
    pub fn for_connector(
        product: Product,
        state: v1::ProductState,
        connector: &str,
    ) -> Result<Working, Error> {
        let model = crate::convert::state_to_model(&state)
            .map_err(|source| Error::Convert { product, source })?;
        let read_only = state
            .accounts
            .iter()
            .filter(|account| !account.read_only_reason.is_empty())
            .map(|account| (account.id.clone(), account.read_only_reason.clone()))
            .collect();
        let envelope = v1::ProductState {
            accounts: Vec::new(),
            groups: Vec::new(),
            memberships: Vec::new(),
            leads: Vec::new(),
            seats: None,
            ..state
        };
        Ok(Working {
            applied: Applied::new(model).for_connector(
                (!connector.is_empty()).then(|| model::state::ConnectorName::new(connector)),
            ),
            envelope,
            read_only,
            recorded: Vec::new(),
        })
    }

    /// The state to cache, as updated by `run_id`.
    pub fn into_state(self, run_id: &str) -> v1::ProductState {
        let model = self.applied.into_state();
        wire_state(&model, &self.envelope, &self.read_only, run_id)
    }

    /// [`Working::into_state`], leaving this one as it is.
    pub fn to_state(&self, run_id: &str) -> v1::ProductState {
        let model = self.applied.to_state();
        wire_state(&model, &self.envelope, &self.read_only, run_id)
    }

    /// The state in the model's form, leaving this one as it is: a copy of the model's
    /// lists, without the conversion to the wire and back that [`Working::to_state`] and
    /// [`crate::convert::state_to_model`] would cost.
    pub fn to_model_state(&self, run_id: &str) -> ModelState {
        ModelState {
            state: self.applied.to_state(),
            envelope: self.envelope.clone(),
            read_only: self.read_only.clone(),
            run_id: run_id.to_owned(),
        }
    }

    /// [`Working::to_model_state`], without a copy.
    pub fn into_model_state(self, run_id: &str) -> ModelState {
        ModelState {
            state: self.applied.into_state(),
            envelope: self.envelope,
            read_only: self.read_only,
            run_id: run_id.to_owned(),
        }
    }

    /// Records `connector` (empty: none) as the owner of what the changes recorded from now
    /// on create or link, and forgets what was recorded so far: a copy of a cache's state
    /// made ready for one change set.
    pub fn for_change_set(mut self, connector: &str) -> Working {
        self.applied.set_connector(
            (!connector.is_empty()).then(|| model::state::ConnectorName::new(connector)),
        );
        self.recorded.clear();
        self
    }

    /// How many accounts, groups and memberships the state holds now.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.applied.counts()
    }

    /// The account with product id `id`.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.applied.account(id)
    }

    /// The account whose login is `login`, compared case-insensitively.
    pub fn account_by_login(&self, login: &str) -> Option<&Account> {
        self.applied.account_by_login(login)
    }

    /// Records what `change` did, now that the product did it (or had it done already):
    /// `account_id` is the product id of the account the change named, as the applier
    /// resolved it, and `created_id` the id the product gave an account it created. A
    /// created account is managed for the change's Keycloak user, and has no read-only
    /// reason.
    pub fn record(
        &mut self,
        change: &v1::Change,
        account_id: Option<&str>,
        created_id: Option<&str>,
    ) {
        self.recorded.push(v1::StateRecord {
            change: Some(change.clone()),
            account_id: account_id.map(str::to_owned),
            created_id: created_id.map(str::to_owned),
        });
        self.record_one(change, account_id, created_id);
    }

    /// What [`Working::record`] took so far, in order.
    pub fn recorded(&self) -> &[v1::StateRecord] {
        &self.recorded
    }

    /// What [`Working::record`] took, leaving none.
    pub fn take_recorded(&mut self) -> Vec<v1::StateRecord> {
        std::mem::take(&mut self.recorded)
    }

    /// Records what another working state took (a journal entry's records), without
    /// taking them again.
    pub fn replay(&mut self, recorded: &[v1::StateRecord]) {
        for one in recorded {
            let Some(change) = &one.change else {
                continue;
            };
            self.record_one(change, one.account_id.as_deref(), one.created_id.as_deref());
        }
    }

    fn record_one(
        &mut self,
        change: &v1::Change,
        account_id: Option<&str>,
        created_id: Option<&str>,
    ) {
        let mut change = change.clone();
        if let Some(id) = account_id {
            change.account = Some(v1::AccountRef {
                r#ref: Some(Ref::AccountId(id.to_owned())),
            });
        }
        let change = match crate::convert::change_to_model(&change) {
            Ok(change) => change,
            Err(error) => {
                tracing::warn!(%error, "A change the product made cannot be recorded in the cache.");
                return;
            }
        };
        if matches!(change.action, Action::CreateUser { .. }) {
            let Some(id) = created_id else {
                return;
            };
            self.read_only.remove(id);
        }
        self.applied
            .apply_one(&change, |_| AccountId::new(created_id.unwrap_or_default()));
    }
}

/// A cached state in the model's form, as a plan reads it, with what only the wire holds
/// kept aside: its [`ModelState::fingerprint`] is [`crate::fingerprint`] of the cached state,
/// computed only when it is needed (a held plan), not for every plan.
pub struct ModelState {
    /// The state, as [`crate::convert::state_to_model`] reads the cached one.
    pub state: ProductState,
    /// The cached state without its accounts, groups and memberships.
    envelope: v1::ProductState,
    /// The read-only reason of each account that has one, by product id.
    read_only: HashMap<String, String>,
    /// The run that made the state.
    run_id: String,
}

/// Its size and run, not its hundred thousand accounts.
impl std::fmt::Debug for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelState")
            .field("product", &self.state.product)
            .field("accounts", &self.state.accounts.len())
            .field("groups", &self.state.groups.len())
            .field("memberships", &self.state.memberships.len())
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl ModelState {
    /// The run that made the state (the last journal entry's, else the base's).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// [`crate::fingerprint`] of the cached state this is the model's form of.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint(&wire_state(
            &self.state,
            &self.envelope,
            &self.read_only,
            &self.run_id,
        ))
    }
}

/// The wire form of `model` with what only the wire holds: the envelope's fields, the
/// read-only reasons, and the run that made it.
fn wire_state(
    model: &model::state::ProductState,
    envelope: &v1::ProductState,
    read_only: &HashMap<String, String>,
    run_id: &str,
) -> v1::ProductState {
    let mut state = crate::convert::state_from_model(model, run_id);
    for account in &mut state.accounts {
        if let Some(reason) = read_only.get(&account.id) {
            account.read_only_reason = reason.clone();
        }
    }
    v1::ProductState {
        accounts: state.accounts,
        groups: state.groups,
        memberships: state.memberships,
        leads: state.leads,
        seats: state.seats,
        run_id: run_id.to_owned(),
        ..envelope.clone()
    }
}
