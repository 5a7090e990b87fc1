//! keysync's cache of each product's state, shared by the appliers (who read the product and
//! write the cache) and the planner (who plans against it). The `[products.*]` sections both
//! read are in the `settings` crate.
//!
//! # Layout
//!
//! A product's state is a **base** and a **journal** above it (#16):
//!
//! - the base: one object per product in the object store bucket `{prefix}-state`, named
//!   after it (`jira`, `confluence`, `bitbucket`): a [`proto::v1::ProductState`] (every
//!   account with its login, name, email, activity, whether keysync manages it and for
//!   which Keycloak user, and why it is read-only if it is; every group with whether keysync
//!   created it; every membership), protobuf-encoded and zstd-compressed, written whole by
//!   an applier's refresh (a full run reads the product) and by a fold;
//! - the journal: in the key-value bucket `{prefix}-state-journal` ([`bus::journal`]), one
//!   small [`proto::v1::StateRecords`] entry per change set the applier applied: what the
//!   product did, as the applier recorded it ([`working::Working`]).
//!
//! The base says how far the journal is in it (`journal_seq`); a reader replays the entries
//! above on it with the model's rules. Each process keeps the state it last loaded in the
//! model's form, with its lookups, so its next load reads and replays only the entries
//! appended since: a delta of one user costs one small append and one small read, never a
//! rewrite or a re-read of 100,000 accounts. The applier takes that state for a change set
//! and gives it back with the set's records ([`Cache::take_working`],
//! [`Cache::record_set`]), so its side of a delta costs what the delta changed; a
//! [`Cache::load`] answers a copy in the wire form (the planner plans against all of it).
//! Once [`FOLD_AFTER`] entries are above the base, the applier folds them into a new base
//! under its cache lock, and the entries are purged. `make bench-cache` measures both sides
//! against a whole rewrite.
//!
//! A full run and a delta may overlap: a refresh takes the journal's position before it
//! reads the product and stores its base with that position, so what a change set recorded
//! during the read is replayed on the new base (recording a change twice is harmless: the
//! model's rules are idempotent). A load that finds the base replaced while it read the
//! journal (whose entries the new base may have purged) starts again.
//!
//! [`Cache::store`] answers the [`proto::v1::ObjectRef`] of a base (with the SHA-256 of the
//! stored bytes) that `StateReady` announces; [`Cache::load_announced_or_newer`] answers
//! the newest state, and says when its base is no longer the announced one.
//!
//! The product knows its accounts, groups and memberships; only the cache knows which of
//! them keysync manages. The state also carries the capabilities the product's client
//! reported, which the plan uses. Conversions to and from the plan's types (states, and the
//! changes the applier records through `model::apply`) are in [`convert`].
//!
//! **Architecture invariant:** this crate knows the wire, the bus and the plan's types; it
//! makes no product calls and plans nothing.

pub mod convert;
pub mod parts;
pub mod working;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bus::Bus;
use bus::journal::{Journal, JournalError};
use bus::objects::ObjectError;
use model::state::Product;
use proto::v1;
use working::{ModelState, Working};

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
    #[error("the state journal of the cached states")]
    Journal(#[source] Box<JournalError>),
    /// The base was replaced again and again while its journal was read.
    #[error("the cached state of {product} kept changing while it was read")]
    Unsettled { product: Product },
    #[error("the cached state in {key} is of {found}, not {expected}")]
    WrongProduct {
        key: String,
        expected: Product,
        found: String,
    },
}

impl From<JournalError> for Error {
    fn from(error: JournalError) -> Error {
        Error::Journal(Box::new(error))
    }
}

impl Error {
    /// Whether the cached object itself is unusable (missing, replaced, damaged), as
    /// opposed to the bus failing.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Object { source, .. } => source.is_permanent(),
            Error::Convert { .. } | Error::WrongProduct { .. } => true,
            Error::Journal(error) => matches!(**error, JournalError::Decode { .. }),
            Error::Unsettled { .. } => false,
        }
    }
}

/// How many journal entries a base may have above it before the applier folds them into a
/// new base ([`Cache::append`] says when): a full sync appends one per change set, and every
/// reader that has not followed the journal replays them all once.
pub const FOLD_AFTER: usize = 64;

/// The most bytes one journal entry's records take: well under a NATS message's default
/// 1 MiB limit.
const ENTRY_BYTES: usize = 256 * 1024;

/// How many times a load starts again because a fold or a refresh replaced the base while
/// it read the journal.
const LOAD_ATTEMPTS: usize = 5;

/// The product state cache of one deployment.
#[derive(Clone)]
pub struct Cache {
    bus: Bus,
    bucket: String,
    journal: Arc<tokio::sync::OnceCell<Journal>>,
    /// The newest state each product was loaded at, kept so the next load reads only the
    /// journal entries appended since (a delta costs what it changed).
    memo: Arc<Mutex<HashMap<Product, Memo>>>,
    /// How many times a base was read whole (for the tests and `make bench-cache`).
    base_reads: Arc<AtomicU64>,
}

/// A product's state as last loaded, in the model's form with its lookups, so the journal
/// entries appended since are replayed at the cost of what they did.
struct Memo {
    at: Position,
    working: Working,
}

/// Where a followed state stands: its base and how far into the journal above it.
#[derive(Debug)]
struct Position {
    base: v1::ObjectRef,
    /// The last journal sequence in the state.
    through: u64,
    /// Journal entries in the state above its base.
    entries: usize,
    /// The run of the newest entry (of the base without any).
    run_id: String,
}

/// Where the state [`Cache::take_working`] answered stood: what [`Cache::record_set`] needs
/// to keep it as the state this process follows.
#[derive(Debug)]
pub struct Lease {
    product: Product,
    at: Position,
}

impl Cache {
    pub fn new(bus: Bus) -> Cache {
        let bucket = bus.topology().state_bucket();
        Cache {
            bus,
            bucket,
            journal: Arc::default(),
            memo: Arc::default(),
            base_reads: Arc::default(),
        }
    }

    /// How many times this cache (and its clones) read a base whole: once per base and
    /// process while the journal above it is followed.
    pub fn base_reads(&self) -> u64 {
        self.base_reads.load(Ordering::Relaxed)
    }

    /// The bucket, `{prefix}-state`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The newest state of `product` (its base with the journal replayed) and where its base
    /// is; `None` before the first refresh.
    pub async fn load(
        &self,
        product: Product,
    ) -> Result<Option<(v1::ProductState, v1::ObjectRef)>, Error> {
        self.with_newest(product, |memo| {
            (memo.working.to_state(&memo.at.run_id), memo.at.base.clone())
        })
        .await
    }

    /// [`Cache::load`], without keeping the state for the next load (and dropping the one
    /// kept): for a process that reads a product's state now and then (the control plane's
    /// approvals), or a full plan that reads all of it anyway, the memory matters more.
    pub async fn load_once(
        &self,
        product: Product,
    ) -> Result<Option<(v1::ProductState, v1::ObjectRef)>, Error> {
        Ok(self
            .newest(product)
            .await?
            .map(|memo| (memo.working.to_state(&memo.at.run_id), memo.at.base)))
    }

    /// [`Cache::load_once`] in the model's form, without a copy: the followed state's lists
    /// are handed over and its lookups dropped. For a refresh, which needs what keysync
    /// knows of each account and group next to a whole read of the product.
    pub async fn load_model_once(&self, product: Product) -> Result<Option<ModelState>, Error> {
        Ok(self
            .newest(product)
            .await?
            .map(|Memo { at, working }| working.into_model_state(&at.run_id)))
    }

    /// The newest state of `product` as a change set starts from it, owned by `connector`'s
    /// changes: the model's state this process follows, taken (not copied) for the set and
    /// given back by [`Cache::record_set`]. `None` before the first refresh.
    pub async fn take_working(
        &self,
        product: Product,
        connector: &str,
    ) -> Result<Option<(Working, Lease)>, Error> {
        let Some(memo) = self.newest(product).await? else {
            return Ok(None);
        };
        let Memo { at, working } = memo;
        Ok(Some((
            working.for_change_set(connector),
            Lease { product, at },
        )))
    }

    /// Appends what `working` recorded while one change set of `run_id` was applied (made
    /// with `connector`'s ownership) to the product's journal ([`Cache::append`]), and
    /// keeps `working` as the state this process follows when nothing else was appended
    /// since it was taken (`lease`): the next set starts from it at no cost. Answers
    /// whether a fold is due.
    pub async fn record_set(
        &self,
        product: Product,
        run_id: &str,
        connector: &str,
        mut working: Working,
        lease: Option<Lease>,
    ) -> Result<bool, Error> {
        let records = working.take_recorded();
        let appended = self
            .append_entries(product, run_id, connector, records)
            .await?;
        let Some(lease) = lease.filter(|lease| lease.product == product) else {
            return Ok(appended.len() >= FOLD_AFTER);
        };
        let Lease { at, .. } = lease;
        let entries = at.entries + appended.len();
        let newer = self
            .journal()
            .await?
            .read_after::<v1::StateRecords>(product.as_str(), at.through)
            .await?;
        let only_ours = newer.len() == appended.len()
            && newer
                .iter()
                .map(|(sequence, _)| *sequence)
                .eq(appended.iter().copied());
        if only_ours {
            let at = Position {
                through: appended.last().copied().unwrap_or(at.through),
                entries,
                run_id: if appended.is_empty() {
                    at.run_id
                } else {
                    run_id.to_owned()
                },
                base: at.base,
            };
            self.memo().entry(product).or_insert(Memo { at, working });
        }
        Ok(entries >= FOLD_AFTER)
    }

    /// Where the base of the newest state is, and how many accounts, groups and
    /// memberships that state holds, without making a copy of it.
    pub async fn summary(
        &self,
        product: Product,
    ) -> Result<Option<(v1::ObjectRef, (usize, usize, usize))>, Error> {
        self.with_newest(product, |memo| {
            (memo.at.base.clone(), memo.working.counts())
        })
        .await
    }

    /// The state a `StateReady` announced, if its base is still the one in the cache, with
    /// the journal replayed on it, in the model's form; a replaced base is
    /// [`ObjectError::Checksum`].
    pub async fn load_announced(
        &self,
        product: Product,
        object: &v1::ObjectRef,
    ) -> Result<ModelState, Error> {
        let (state, newer) = self.load_announced_or_newer(product, object, true).await?;
        if newer {
            return Err(Error::Object {
                product,
                source: ObjectError::Checksum {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    expected: object.sha256.clone(),
                    found: "a newer base".to_owned(),
                },
            });
        }
        Ok(state)
    }

    /// The state a `StateReady` announced or, when a later refresh or change set has
    /// changed it since (another connector's run reads the same product), the newest one:
    /// a state read after the announced one is at least as true of the product. Answers
    /// whether the newer state was taken (its base is not the announced one). `keep`: keep
    /// the state for the next load ([`Cache::load`]) or not ([`Cache::load_once`]).
    ///
    /// The state is in the model's form, as a plan reads it: a copy of the followed state's
    /// lists (none without `keep`), never a conversion to the wire and back, which at
    /// 100,000 accounts cost a delta's plan five times as much.
    pub async fn load_announced_or_newer(
        &self,
        product: Product,
        object: &v1::ObjectRef,
        keep: bool,
    ) -> Result<(ModelState, bool), Error> {
        let loaded = if keep {
            self.with_newest(product, |memo| {
                (
                    memo.working.to_model_state(&memo.at.run_id),
                    memo.at.base.sha256.clone(),
                )
            })
            .await?
        } else {
            self.newest(product).await?.map(|memo| {
                let Memo { at, working } = memo;
                (working.into_model_state(&at.run_id), at.base.sha256)
            })
        };
        match loaded {
            Some((state, base)) => Ok((state, !base.eq_ignore_ascii_case(&object.sha256))),
            None => Err(Error::Object {
                product,
                source: ObjectError::NotFound {
                    bucket: self.bucket.clone(),
                    key: object.key.clone(),
                },
            }),
        }
    }

    /// The checksum of the base of the newest cached state of `product`
    /// ([`v1::ObjectRef::sha256`]), without loading it; `None` before the first refresh.
    pub async fn current_sha256(&self, product: Product) -> Result<Option<String>, Error> {
        self.bus
            .object_sha256(&self.bucket, product.as_str())
            .await
            .map_err(|source| Error::Object { product, source })
    }

    /// Replaces the base of `product`'s state with `state`, which must be of that product
    /// and hold the journal through `state.journal_seq`; the entries up to there are
    /// purged.
    pub async fn store(
        &self,
        product: Product,
        state: &v1::ProductState,
    ) -> Result<v1::ObjectRef, Error> {
        check_product(state, product, product.as_str())?;
        let object = self
            .bus
            .put_object(&self.bucket, product.as_str(), state)
            .await
            .map_err(|source| Error::Object { product, source })?;
        if state.journal_seq > 0 {
            self.journal()
                .await?
                .purge_through(product.as_str(), state.journal_seq)
                .await?;
        }
        Ok(object)
    }

    /// The journal's position: a refresh that starts reading the product now stores a
    /// base holding the journal through it ([`v1::ProductState::journal_seq`]), so what a
    /// change set recorded while the product was read is replayed on the new base.
    pub async fn journal_position(&self) -> Result<u64, Error> {
        Ok(self.journal().await?.position().await?)
    }

    /// Appends what one change set of `run_id` did to `product` (`records`, made with
    /// `connector`'s ownership) to the product's journal: one small entry (or a few, for a
    /// large set) instead of a rewrite of the whole state. Answers whether enough entries
    /// are above the base for [`Cache::fold`] to be due.
    pub async fn append(
        &self,
        product: Product,
        run_id: &str,
        connector: &str,
        records: Vec<v1::StateRecord>,
    ) -> Result<bool, Error> {
        let written = self
            .append_entries(product, run_id, connector, records)
            .await?
            .len();
        let entries = self
            .memo()
            .get(&product)
            .map(|memo| memo.at.entries)
            .unwrap_or_default();
        Ok(written > 0 && entries + written >= FOLD_AFTER)
    }

    /// Appends `records` in entries of at most [`ENTRY_BYTES`]; answers their sequences.
    async fn append_entries(
        &self,
        product: Product,
        run_id: &str,
        connector: &str,
        records: Vec<v1::StateRecord>,
    ) -> Result<Vec<u64>, Error> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let journal = self.journal().await?;
        let mut sequences = Vec::new();
        for chunk in chunks(records) {
            let entry = v1::StateRecords {
                schema_version: v1::SCHEMA_VERSION,
                product: convert::product_to_proto(product) as i32,
                run_id: run_id.to_owned(),
                connector: connector.to_owned(),
                records: chunk,
            };
            sequences.push(journal.append(product.as_str(), &entry).await?);
        }
        Ok(sequences)
    }

    /// Stores the newest state of `product` as its new base, taking the journal entries
    /// above the old one in (and purging them). The caller holds the product's cache lock,
    /// so a refresh storing a base at the same time cannot be lost.
    pub async fn fold(&self, product: Product) -> Result<(), Error> {
        let folded = self
            .with_newest(product, |memo| {
                (memo.at.entries > 0).then(|| {
                    let mut state = memo.working.to_state(&memo.at.run_id);
                    state.journal_seq = memo.at.through;
                    state
                })
            })
            .await?;
        if let Some(Some(state)) = folded {
            self.store(product, &state).await?;
        }
        Ok(())
    }

    /// `f` of the newest state ([`Cache::newest`]), which is kept for the next load.
    async fn with_newest<T>(
        &self,
        product: Product,
        f: impl FnOnce(&Memo) -> T,
    ) -> Result<Option<T>, Error> {
        let Some(memo) = self.newest(product).await? else {
            return Ok(None);
        };
        let answer = f(&memo);
        self.memo().insert(product, memo);
        Ok(Some(answer))
    }

    /// The newest state: the memo's when its base is still the cached one, else the
    /// base's, with the journal entries above either replayed; again when the base was
    /// replaced while the journal was read. The memo is taken out (a concurrent load reads
    /// the base itself) and is the caller's to keep or not.
    async fn newest(&self, product: Product) -> Result<Option<Memo>, Error> {
        for _ in 0..LOAD_ATTEMPTS {
            let Some(sha256) = self.current_sha256(product).await? else {
                self.memo().remove(&product);
                return Ok(None);
            };
            let remembered = self
                .memo()
                .remove(&product)
                .filter(|memo| memo.at.base.sha256.eq_ignore_ascii_case(&sha256));
            let memo = match remembered {
                Some(memo) => memo,
                None => {
                    self.base_reads.fetch_add(1, Ordering::Relaxed);
                    let loaded = self
                        .bus
                        .get_latest_object::<v1::ProductState>(&self.bucket, product.as_str())
                        .await
                        .map_err(|source| Error::Object { product, source })?;
                    let Some((state, base)) = loaded else {
                        continue;
                    };
                    check_product(&state, product, &base.key)?;
                    Memo {
                        at: Position {
                            base,
                            through: state.journal_seq,
                            entries: 0,
                            run_id: state.run_id.clone(),
                        },
                        working: Working::new(product, state)?,
                    }
                }
            };
            let memo = self.replay(product, memo).await?;
            let now = self.current_sha256(product).await?;
            if now.is_some_and(|now| now.eq_ignore_ascii_case(&memo.at.base.sha256)) {
                return Ok(Some(memo));
            }
        }
        Err(Error::Unsettled { product })
    }

    /// `memo` with the journal's newer entries replayed, each with its connector as the
    /// owner of what it created or linked.
    async fn replay(&self, product: Product, mut memo: Memo) -> Result<Memo, Error> {
        let newer = self
            .journal()
            .await?
            .read_after::<v1::StateRecords>(product.as_str(), memo.at.through)
            .await?;
        let wire_product = convert::product_to_proto(product) as i32;
        for (sequence, entry) in newer {
            if entry.product != wire_product {
                return Err(Error::WrongProduct {
                    key: format!(
                        "{} entry {sequence}",
                        self.bus.topology().state_journal_bucket()
                    ),
                    expected: product,
                    found: wire_product_name(entry.product),
                });
            }
            memo.working = memo.working.for_change_set(&entry.connector);
            memo.working.replay(&entry.records);
            memo.at.through = sequence;
            memo.at.entries += 1;
            memo.at.run_id = entry.run_id;
        }
        Ok(memo)
    }

    async fn journal(&self) -> Result<&Journal, Error> {
        let bucket = self.bus.topology().state_journal_bucket();
        Ok(self
            .journal
            .get_or_try_init(|| {
                Journal::open(
                    &self.bus,
                    &bucket,
                    "keysync: what change sets did to product states",
                )
            })
            .await?)
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<Product, Memo>> {
        self.memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `records` in runs that each encode to at most [`ENTRY_BYTES`] (a record larger than
/// that alone is a run of one).
fn chunks(records: Vec<v1::StateRecord>) -> Vec<Vec<v1::StateRecord>> {
    use prost::Message;

    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for record in records {
        let size = record.encoded_len() + 4;
        if !chunk.is_empty() && bytes + size > ENTRY_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(record);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

fn check_product(state: &v1::ProductState, expected: Product, key: &str) -> Result<(), Error> {
    match convert::product_from_proto(state.product) {
        Ok(found) if found == expected => Ok(()),
        _ => Err(Error::WrongProduct {
            key: key.to_owned(),
            expected,
            found: wire_product_name(state.product),
        }),
    }
}

/// A wire product's name, or its number when it names none.
fn wire_product_name(product: i32) -> String {
    v1::Product::try_from(product)
        .map(|product| product.as_str_name().to_owned())
        .unwrap_or_else(|_| product.to_string())
}

/// A fingerprint of what a product state says about the product: its accounts, groups,
/// memberships and capabilities, in any order, without when it was read or by which run.
/// The planner records it with each product's plan; approving a held plan is refused once
/// the cached state's fingerprint differs, because the plan was made against a product that
/// has changed since. 32 hex digits of a SHA-256.
///
/// The digest is of the canonical state's protobuf encoding (the lists sorted, `read_at`,
/// `run_id` and `journal_seq` cleared), written field by field in tag order as prost
/// encodes a message, so no copy of a state of 100,000 accounts is made to sort it.
pub fn fingerprint(state: &v1::ProductState) -> String {
    use prost::encoding;
    use sha2::Digest;

    // Every field is named, so a field added to the message must be placed here too.
    let v1::ProductState {
        schema_version,
        product,
        accounts,
        groups,
        memberships,
        read_at: _,
        run_id: _,
        capabilities,
        leads,
        seats,
        journal_seq: _,
    } = state;
    let mut accounts: Vec<&v1::CachedAccount> = accounts.iter().collect();
    accounts.sort_by(|left, right| left.id.cmp(&right.id));
    let mut groups: Vec<&v1::CachedGroup> = groups.iter().collect();
    groups.sort_by(|left, right| left.name.cmp(&right.name));
    let mut memberships: Vec<&v1::CachedMembership> = memberships.iter().collect();
    memberships.sort_by(|left, right| {
        (&left.account_id, &left.group).cmp(&(&right.account_id, &right.group))
    });

    let mut hashing = Hashing::default();
    if *schema_version != 0 {
        encoding::uint32::encode(1, schema_version, &mut hashing.buf);
    }
    if *product != 0 {
        encoding::int32::encode(2, product, &mut hashing.buf);
    }
    for account in accounts {
        hashing.message(3, account);
    }
    for group in groups {
        hashing.message(4, group);
    }
    for membership in memberships {
        hashing.message(5, membership);
    }
    if let Some(capabilities) = capabilities {
        hashing.message(8, capabilities);
    }
    for lead in leads {
        hashing.message(9, lead);
    }
    if let Some(seats) = seats {
        hashing.message(10, seats);
    }
    let Hashing { mut sha, buf } = hashing;
    sha.update(&buf);
    let digest = sha.finalize();
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A SHA-256 fed through a buffer that prost encodes into, 64 KiB at a time.
#[derive(Default)]
struct Hashing {
    sha: sha2::Sha256,
    buf: Vec<u8>,
}

impl Hashing {
    /// Adds `message` as the field `tag` of the message being hashed.
    fn message(&mut self, tag: u32, message: &impl prost::Message) {
        use sha2::Digest;
        prost::encoding::message::encode(tag, message, &mut self.buf);
        if self.buf.len() >= 64 * 1024 {
            self.sha.update(&self.buf);
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> v1::ProductState {
        v1::ProductState {
            schema_version: v1::SCHEMA_VERSION,
            journal_seq: 0,
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
