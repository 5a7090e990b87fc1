//! keysync's cache of each product's state, shared by the appliers (who read the product and
//! write the cache) and the planner (who plans against it). The `[products.*]` sections both
//! read are in the `settings` crate.
//!
//! # Layout
//!
//! One JetStream object store bucket per deployment, `{prefix}-state`, holds one object per
//! product, named after it (`jira`, `confluence`, `bitbucket`): a [`proto::v1::ProductState`]
//! (every account with its login, name, email, activity, whether keysync manages it and for
//! which Keycloak user, and why it is read-only if it is; every group with whether keysync
//! created it; every membership), protobuf-encoded and zstd-compressed. The object is
//! replaced as a whole: by an applier's refresh at the start of every run, and at the end of
//! every change set the applier applies. [`Cache::store`] answers the [`proto::v1::ObjectRef`]
//! (with the SHA-256 of the stored bytes) that `StateReady` announces, and
//! [`Cache::load_announced`] refuses an object that changed since.
//!
//! The product knows its accounts, groups and memberships; only the cache knows which of
//! them keysync manages. The state also carries the capabilities the product's client
//! reported, which the plan uses. Conversions to and from the plan's types (states, and the
//! changes the applier records through `model::apply`) are in [`convert`].
//!
//! **Architecture invariant:** this crate knows the wire, the bus and the plan's types; it
//! makes no product calls and plans nothing.

pub mod convert;

use bus::Bus;
use bus::objects::ObjectError;
use model::state::Product;
use proto::v1;

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cached state of {product}")]
    Object {
        product: Product,
        #[source]
        source: ObjectError,
    },
    #[error("the cached state of {product}")]
    Convert {
        product: Product,
        #[source]
        source: convert::ConvertError,
    },
    #[error("the cached state in {key} is of {found}, not {expected}")]
    WrongProduct {
        key: String,
        expected: Product,
        found: String,
    },
}

impl Error {
    /// Whether the cached object itself is unusable (missing, replaced, damaged), as
    /// opposed to the bus failing.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Object { source, .. } => source.is_permanent(),
            Error::Convert { .. } | Error::WrongProduct { .. } => true,
        }
    }
}

/// The product state cache of one deployment.
#[derive(Clone)]
pub struct Cache {
    bus: Bus,
    bucket: String,
}

impl Cache {
    pub fn new(bus: Bus) -> Cache {
        let bucket = bus.topology().state_bucket();
        Cache { bus, bucket }
    }

    /// The bucket, `{prefix}-state`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The newest cached state of `product` and where it is; `None` before the first
    /// refresh.
    pub async fn load(
        &self,
        product: Product,
    ) -> Result<Option<(v1::ProductState, v1::ObjectRef)>, Error> {
        let loaded = self
            .bus
            .get_latest_object::<v1::ProductState>(&self.bucket, product.as_str())
            .await
            .map_err(|source| Error::Object { product, source })?;
        let Some((state, object)) = loaded else {
            return Ok(None);
        };
        check_product(&state, product, &object.key)?;
        Ok(Some((state, object)))
    }

    /// The state a `StateReady` announced, if it is still the one in the cache.
    pub async fn load_announced(
        &self,
        product: Product,
        object: &v1::ObjectRef,
    ) -> Result<v1::ProductState, Error> {
        let state = self
            .bus
            .get_object::<v1::ProductState>(object)
            .await
            .map_err(|source| Error::Object { product, source })?;
        check_product(&state, product, &object.key)?;
        Ok(state)
    }

    /// The state a `StateReady` announced or, when a later refresh or change set has
    /// replaced it since (another connector's run reads the same product), the newest one:
    /// a state read after the announced one is at least as true of the product. Answers
    /// whether the newer state was taken.
    pub async fn load_announced_or_newer(
        &self,
        product: Product,
        object: &v1::ObjectRef,
    ) -> Result<(v1::ProductState, bool), Error> {
        match self.load_announced(product, object).await {
            Ok(state) => Ok((state, false)),
            Err(Error::Object {
                source: ObjectError::Checksum { .. },
                ..
            }) => match self.load(product).await? {
                Some((state, _)) => Ok((state, true)),
                None => Err(Error::Object {
                    product,
                    source: ObjectError::NotFound {
                        bucket: self.bucket.clone(),
                        key: object.key.clone(),
                    },
                }),
            },
            Err(error) => Err(error),
        }
    }

    /// The checksum of the newest cached state of `product` ([`v1::ObjectRef::sha256`]),
    /// without loading it; `None` before the first refresh.
    pub async fn current_sha256(&self, product: Product) -> Result<Option<String>, Error> {
        self.bus
            .object_sha256(&self.bucket, product.as_str())
            .await
            .map_err(|source| Error::Object { product, source })
    }

    /// Replaces the cached state of `product`; the state must be of that product.
    pub async fn store(
        &self,
        product: Product,
        state: &v1::ProductState,
    ) -> Result<v1::ObjectRef, Error> {
        check_product(state, product, product.as_str())?;
        self.bus
            .put_object(&self.bucket, product.as_str(), state)
            .await
            .map_err(|source| Error::Object { product, source })
    }
}

fn check_product(state: &v1::ProductState, expected: Product, key: &str) -> Result<(), Error> {
    match convert::product_from_proto(state.product) {
        Ok(found) if found == expected => Ok(()),
        _ => Err(Error::WrongProduct {
            key: key.to_owned(),
            expected,
            found: v1::Product::try_from(state.product)
                .map(|product| product.as_str_name().to_owned())
                .unwrap_or_else(|_| state.product.to_string()),
        }),
    }
}

/// A fingerprint of what a product state says about the product: its accounts, groups,
/// memberships and capabilities, in any order, without when it was read or by which run.
/// The planner records it with each product's plan; approving a held plan is refused once
/// the cached state's fingerprint differs, because the plan was made against a product that
/// has changed since. 32 hex digits of a SHA-256.
pub fn fingerprint(state: &v1::ProductState) -> String {
    use prost::Message;
    use sha2::Digest;

    let mut canonical = state.clone();
    canonical.read_at = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> v1::ProductState {
        v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            product: v1::Product::Jira as i32,
            accounts: vec![
                v1::CachedAccount {
                    id: "2".into(),
                    login: "bob".into(),
                    ..v1::CachedAccount::default()
                },
                v1::CachedAccount {
                    id: "1".into(),
                    login: "ann".into(),
                    managed: true,
                    ..v1::CachedAccount::default()
                },
            ],
            groups: vec![v1::CachedGroup {
                name: "staff".into(),
                managed: true,
                connector: String::new(),
            }],
            memberships: vec![
                v1::CachedMembership {
                    account_id: "2".into(),
                    group: "staff".into(),
                },
                v1::CachedMembership {
                    account_id: "1".into(),
                    group: "staff".into(),
                },
            ],
            read_at: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            run_id: "01JZRUN1".into(),
            capabilities: None,
            leads: Vec::new(),
            seats: None,
        }
    }

    #[test]
    fn the_fingerprint_ignores_order_time_and_run() {
        let first = state();
        let mut second = state();
        second.accounts.reverse();
        second.memberships.reverse();
        second.read_at = None;
        second.run_id = "01JZRUN2".into();
        assert_eq!(fingerprint(&first), fingerprint(&second));
        assert_eq!(fingerprint(&first).len(), 32);
    }

    #[test]
    fn the_fingerprint_changes_with_what_the_product_holds() {
        let first = state();
        let mut removed = state();
        removed.memberships.pop();
        let mut renamed = state();
        renamed.accounts[0].login = "robert".into();
        let mut unmanaged = state();
        unmanaged.accounts[1].managed = false;
        for changed in [removed, renamed, unmanaged] {
            assert_ne!(fingerprint(&first), fingerprint(&changed));
        }
    }
}
