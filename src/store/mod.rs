//! The embedded store (schema version 2): one redb file, Odoo-like ids (monotonic,
//! never reused), indexes, group commits, and a clear refusal when the disk cannot
//! take a write.
//!
//! - Connectors (few, read on every call) are held in memory and written through.
//! - Runs and deliveries live on disk only ([`schema`]): read by id through a bounded
//!   cache, or through indexes (by connector, state, split, idempotency key, time) in
//!   pages, so memory follows the work in flight, not the history.
//! - Writes (`put_all`, `remove_all`) go to an in-memory layer that reads see at once;
//!   [`Store::flush`] makes everything written so far durable in one transaction, and
//!   concurrent callers share it (group commit). A caller answers its client only after
//!   its flush returned.
//! - The first failed commit (a full disk) makes the store refuse every later write
//!   with [`StoreError::Unwritable`] until the service is restarted: what was
//!   acknowledged is on disk, and the restart reads exactly that.
//!
//! [`layout`] owns the data dir (modes, creation, migration of version-1 dirs) and
//! [`retention`] drops old runs and deliveries.

mod cache;
pub mod codec;
mod layout;
pub mod retention;
mod rows;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};

use rustc_hash::FxHashMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

use crate::model::fields::Record;
use cache::GenCache;
use codec::Dict;
use schema::ModelSchema;

/// The layout version this build writes. A data dir with a newer one is refused; a
/// version-1 dir (one sled tree per model) is migrated at start.
pub const SCHEMA_VERSION: u32 = 2;

/// The store file inside the data dir.
pub const STORE_FILE: &str = "store.redb";

/// Below this much free space on the data dir's filesystem the store reports itself
/// not ready: a commit would likely fail.
pub const MIN_FREE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another mts-connector process (its lock file is held)")]
    Locked(PathBuf),
    #[error(
        "data dir {path} was written by a newer mts-connector (schema version {found}; this build understands up to {SCHEMA_VERSION}); upgrade this binary"
    )]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("store error: {0}")]
    Db(#[from] redb::Error),
    #[error("stored record {model}/{id} is unreadable: {message}")]
    Corrupt { model: String, id: u64, message: String },
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error(
        "the store in {path} cannot write ({reason}); writes are refused until the service is restarted with free space (everything acknowledged before is on disk)"
    )]
    Unwritable { path: PathBuf, reason: String },
    #[error("cannot migrate the version-1 store {path}: {message}")]
    Migration { path: PathBuf, message: String },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e))
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Sizes of the store's memory.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// redb's page cache.
    pub cache_bytes: usize,
    /// Decoded records kept per on-disk model (two generations of this many).
    pub record_cache: usize,
    /// Hold every model in memory, as schema version 1 did (reads and searches never
    /// touch the disk, memory grows with the history): the baseline of
    /// `examples/bench_store.rs`, not a setting of the service.
    pub in_memory: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_bytes: 16 << 20, record_cache: 2048, in_memory: false }
    }
}

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SCHEDULE: TableDefinition<u64, i64> = TableDefinition::new("schedule");

fn records_def(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn index_def(name: &str) -> TableDefinition<'_, &'static [u8], ()> {
    TableDefinition::new(name)
}

struct Table {
    schema: ModelSchema,
    /// `r/<model>`: id -> encoded record.
    records: String,
    /// `i/<model>/<index>`, in the order of `schema.indexes`.
    indexes: Vec<String>,
    /// In-memory models: every record, as one shared snapshot that a write copies only
    /// while a reader still holds it ([`Store::rows`]).
    rows: Option<RwLock<Arc<Rows>>>,
    cache: Mutex<GenCache>,
    /// Bumped by every change of the table (see [`Store::generation`]).
    generation: AtomicU64,
    /// Unique in the process: what a thread's remembered [`Store::newest_id`] answers
    /// name this table by.
    uid: u64,
}

/// The next [`Table::uid`].
static TABLE_UIDS: AtomicU64 = AtomicU64::new(1);

/// Newest ids by table, index and key prefix, each with the generation it was read at.
type Remembered = FxHashMap<MemoKey, (u64, Option<u64>)>;

/// What a remembered newest id is found by (table, index, key prefix), held inline: a
/// look-up compares bytes in the map's own entry rather than in a key allocated apart.
/// Longer keys than this are not remembered (the control plane's are about 32 bytes).
#[derive(Clone, Copy)]
struct MemoKey {
    len: u8,
    bytes: [u8; 55],
}

impl MemoKey {
    fn new(key: &[u8]) -> Option<MemoKey> {
        let mut bytes = [0; 55];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(MemoKey { len: key.len() as u8, bytes })
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for MemoKey {
    fn eq(&self, other: &MemoKey) -> bool {
        self.key() == other.key()
    }
}

impl Eq for MemoKey {}

impl std::hash::Hash for MemoKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key().hash(h)
    }
}

pub use rows::Rows;

/// The tables by model name.
type Tables = FxHashMap<&'static str, Table>;

impl Table {
    fn new(schema: ModelSchema, record_cache: usize) -> Table {
        let model = schema.model;
        Table {
            records: format!("r/{model}"),
            indexes: schema.indexes.iter().map(|i| format!("i/{model}/{}", i.name)).collect(),
            rows: (!schema.on_disk).then(|| RwLock::new(Arc::new(Rows::default()))),
            cache: Mutex::new(GenCache::new(if schema.on_disk { record_cache } else { 0 })),
            generation: AtomicU64::new(0),
            uid: TABLE_UIDS.fetch_add(1, Ordering::Relaxed),
            schema,
        }
    }

    fn index(&self, name: &str) -> Option<(usize, schema::IndexDef)> {
        self.schema.indexes.iter().position(|i| i.name == name).map(|i| (i, self.schema.indexes[i]))
    }
}

/// Writes not yet durable: what `put_all`/`remove_all` did since the last commit
/// started. `None` is a removal.
#[derive(Default)]
pub(crate) struct Layer {
    records: FxHashMap<&'static str, FxHashMap<u64, Option<Arc<Record>>>>,
    schedule: HashMap<u64, Option<i64>>,
    seqs: HashMap<String, u64>,
}

impl Layer {
    fn is_empty(&self) -> bool {
        self.records.values().all(FxHashMap::is_empty) && self.schedule.is_empty() && self.seqs.is_empty()
    }
}

#[derive(Default)]
struct Overlay {
    pending: Layer,
    /// Layers being committed (oldest first); reads see them until they are on disk.
    committing: Vec<Arc<Layer>>,
}

impl Overlay {
    fn record(&self, model: &str, id: u64) -> Option<Option<Arc<Record>>> {
        if let Some(r) = self.pending.records.get(model).and_then(|m| m.get(&id)) {
            return Some(r.clone());
        }
        self.committing.iter().rev().find_map(|l| l.records.get(model).and_then(|m| m.get(&id)).cloned())
    }

    /// Every overlaid record of `model`, newest version of each.
    fn records(&self, model: &str) -> BTreeMap<u64, Option<Arc<Record>>> {
        let mut out = BTreeMap::new();
        for layer in self.committing.iter().map(|l| l.as_ref()).chain(std::iter::once(&self.pending)) {
            if let Some(m) = layer.records.get(model) {
                for (id, r) in m {
                    out.insert(*id, r.clone());
                }
            }
        }
        out
    }
}

/// What the store knows about its ability to write.
#[derive(Debug, Clone)]
pub struct WriteHealth {
    /// The reason writes are refused, once a commit failed.
    pub failed: Option<String>,
    /// Free bytes on the data dir's filesystem (cached for a second).
    pub free_bytes: Result<u64, String>,
    /// When the last commit ended and whether it succeeded.
    pub last_commit: Option<(Instant, Result<(), String>)>,
}

impl WriteHealth {
    /// `Ok` when a write now would most likely be durable.
    pub fn ready(&self) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            return Err(format!("writes are refused since a commit failed: {reason}"));
        }
        match &self.free_bytes {
            Ok(free) if *free < MIN_FREE_BYTES => {
                Err(format!("the data dir's filesystem has only {} KiB free", free / 1024))
            }
            Err(e) => Err(format!("cannot tell the free space of the data dir: {e}")),
            Ok(_) => Ok(()),
        }
    }
}

struct Inner {
    db: redb::Database,
    tables: Tables,
    dict: RwLock<Dict>,
    overlay: Mutex<Overlay>,
    /// One commit at a time (also across dropped flush futures).
    commit_lock: Mutex<()>,
    /// Last id given out per model name.
    seqs: Mutex<HashMap<String, u64>>,
    /// Connector id -> next run at (ms since the epoch).
    schedule: Mutex<BTreeMap<u64, i64>>,
    /// Committed counts (`count/<model>/<field>=<value>`) and sums (`sum/<model>/<field>`).
    aggs: Mutex<HashMap<String, i64>>,
    /// Bumped by every commit: a record read from disk is cached only if no commit
    /// ended while it was read (it could be older than the commit's version).
    commits: AtomicU64,
    /// Group commit: every change bumps `written`; a commit records how far it got in
    /// `flushed`, so callers whose changes an earlier commit covered return at once.
    written: AtomicU64,
    flushed: AtomicU64,
    failed: Mutex<Option<String>>,
    last_commit: Mutex<Option<(Instant, Result<(), String>)>>,
    free_space: Mutex<Option<(Instant, Result<u64, String>)>>,
    path: PathBuf,
    _lock_file: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked between two whole updates.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Store {
    inner: Arc<Inner>,
    write_lock: Mutex<()>,
    flush_turn: tokio::sync::Mutex<()>,
}

type DiskKeys = Box<
    dyn Iterator<
            Item = Result<
                (redb::AccessGuard<'static, &'static [u8]>, redb::AccessGuard<'static, ()>),
                redb::StorageError,
            >,
        > + Send,
>;

/// Ids under an index prefix, in index order: the committed entries merged with the
/// writes not yet committed. Holds a read snapshot of the store while it lives.
pub struct IndexIds {
    disk: DiskKeys,
    next_disk: Option<(Vec<u8>, u64)>,
    extra: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, u64)>>,
    overridden: HashSet<u64>,
    desc: bool,
    done: bool,
}

impl Iterator for IndexIds {
    type Item = Result<u64, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_disk.is_none() && !self.done {
                match self.disk.next() {
                    Some(Ok((k, _))) => {
                        let key = k.value().to_vec();
                        let id = codec::key_id(&key);
                        if self.overridden.contains(&id) {
                            continue;
                        }
                        self.next_disk = Some((key, id));
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                    None => self.done = true,
                }
            }
            let take_extra = match (&self.next_disk, self.extra.peek()) {
                (None, None) => return None,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((dk, _)), Some((ek, _))) => {
                    if self.desc {
                        ek > dk
                    } else {
                        ek < dk
                    }
                }
            };
            return if take_extra {
                self.extra.next().map(|(_, id)| Ok(id))
            } else {
                self.next_disk.take().map(|(_, id)| Ok(id))
            };
        }
    }
}

/// What a commit changed in the counts and sums.
type AggDelta = HashMap<String, i64>;

fn count_key(model: &str, field: &str, value: Option<&Value>) -> String {
    let v = match value {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) | Some(Value::Bool(false)) => String::new(),
        Some(other) => other.to_string(),
    };
    format!("count/{model}/{field}={v}")
}

fn sum_key(model: &str, field: &str) -> String {
    format!("sum/{model}/{field}")
}

fn aggregate(delta: &mut AggDelta, schema: &ModelSchema, rec: &Record, sign: i64) {
    for f in schema.counted {
        *delta.entry(count_key(schema.model, f, rec.values.get(*f))).or_default() += sign;
    }
    for f in schema.summed {
        let n = rec.int(f).unwrap_or(0).max(0);
        *delta.entry(sum_key(schema.model, f)).or_default() += sign * n;
    }
}

/// Writes `layer` into `tx`: records, their index entries (the old version's removed),
/// the schedule, counters and the dictionary's new codes. Answers the aggregate changes.
fn write_layer(
    tx: &redb::WriteTransaction,
    tables: &Tables,
    dict: &mut Dict,
    layer: &Layer,
) -> Result<AggDelta, StoreError> {
    let mut delta = AggDelta::new();
    let mut fresh = Vec::new();
    for (model, changes) in &layer.records {
        let Some(table) = tables.get(model) else { continue };
        let mut records = tx.open_table(records_def(&table.records))?;
        let mut indexes = Vec::with_capacity(table.indexes.len());
        for name in &table.indexes {
            indexes.push(tx.open_table(index_def(name))?);
        }
        let tracked = !table.indexes.is_empty() || !table.schema.counted.is_empty() || !table.schema.summed.is_empty();
        for (id, new) in changes {
            // The old version's index keys; an entry whose key did not change (a run
            // whose counters moved) is left alone.
            let mut old_keys: Vec<Option<Vec<u8>>> = vec![None; table.schema.indexes.len()];
            if tracked {
                let old = records.get(*id)?.map(|b| codec::decode(*id, b.value(), dict));
                if let Some(old) = old {
                    let old =
                        old.map_err(|message| StoreError::Corrupt { model: model.to_string(), id: *id, message })?;
                    for (i, def) in table.schema.indexes.iter().enumerate() {
                        old_keys[i] = def.key(&old);
                    }
                    aggregate(&mut delta, &table.schema, &old, -1);
                }
            }
            for (i, def) in table.schema.indexes.iter().enumerate() {
                let new_key = new.as_ref().and_then(|rec| def.key(rec));
                if old_keys[i] == new_key {
                    continue;
                }
                if let Some(k) = &old_keys[i] {
                    indexes[i].remove(k.as_slice())?;
                }
                if let Some(k) = new_key {
                    indexes[i].insert(k.as_slice(), ())?;
                }
            }
            match new {
                Some(rec) => {
                    let bytes = codec::encode(rec, dict, &mut fresh);
                    records.insert(*id, bytes.as_slice())?;
                    if tracked {
                        aggregate(&mut delta, &table.schema, rec, 1);
                    }
                }
                None => {
                    records.remove(*id)?;
                }
            }
        }
    }
    let mut meta = tx.open_table(META)?;
    for (code, name) in fresh {
        meta.insert(format!("dict/{code}").as_str(), name.as_bytes())?;
    }
    for (model, last) in &layer.seqs {
        meta.insert(format!("seq/{model}").as_str(), last.to_be_bytes().as_slice())?;
    }
    delta.retain(|_, v| *v != 0);
    for (k, d) in &delta {
        let now = meta.get(k.as_str())?.and_then(|v| v.value().try_into().ok()).map_or(0, i64::from_be_bytes);
        meta.insert(k.as_str(), (now + d).to_be_bytes().as_slice())?;
    }
    if !layer.schedule.is_empty() {
        let mut schedule = tx.open_table(SCHEDULE)?;
        for (id, at) in &layer.schedule {
            match at {
                Some(at) => schedule.insert(*id, *at)?,
                None => schedule.remove(*id)?,
            };
        }
    }
    Ok(delta)
}

impl Inner {
    fn table(&self, model: &str) -> Result<&Table, StoreError> {
        self.tables.get(model).ok_or_else(|| StoreError::UnknownModel(model.to_string()))
    }

    /// Refuses a write before it changes anything: after a failed commit, or while the
    /// disk is (nearly) full, so that no caller updates its own state for a write that
    /// cannot become durable.
    fn check_writable(&self) -> Result<(), StoreError> {
        if let Some(reason) = lock(&self.failed).as_ref() {
            return Err(StoreError::Unwritable { path: self.path.clone(), reason: reason.clone() });
        }
        self.check_space(self.free_bytes())
    }

    fn check_space(&self, free: Result<u64, String>) -> Result<(), StoreError> {
        match free {
            Ok(free) if free < MIN_FREE_BYTES => Err(StoreError::Unwritable {
                path: self.path.clone(),
                reason: format!("no space left: the data dir's filesystem has {} KiB free", free / 1024),
            }),
            _ => Ok(()),
        }
    }

    fn decode(&self, model: &str, id: u64, bytes: &[u8]) -> Result<Record, StoreError> {
        let dict = self.dict.read().unwrap_or_else(|p| p.into_inner());
        codec::decode(id, bytes, &dict).map_err(|message| StoreError::Corrupt { model: model.to_string(), id, message })
    }

    fn read_record(&self, table: &Table, id: u64) -> Result<Option<Record>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(records_def(&table.records))?;
        let Some(bytes) = t.get(id)? else { return Ok(None) };
        self.decode(table.schema.model, id, bytes.value()).map(Some)
    }

    /// Commits every pending write durably (blocking: run it off the async runtime).
    fn commit_pending(&self) -> Result<(), StoreError> {
        let _one = lock(&self.commit_lock);
        if let Some(reason) = lock(&self.failed).as_ref() {
            return Err(StoreError::Unwritable { path: self.path.clone(), reason: reason.clone() });
        }
        // A commit that would run out of space fails redb for good (every later read
        // and write of this process fails too): do not start one. The writes stay
        // pending and visible, and the next flush with space commits them.
        let free = layout::free_bytes(&self.path);
        *lock(&self.free_space) = Some((Instant::now(), free.clone()));
        self.check_space(free)?;
        let (layer, upto) = {
            let mut o = lock(&self.overlay);
            let upto = self.written.load(Ordering::SeqCst);
            if o.pending.is_empty() {
                self.flushed.fetch_max(upto, Ordering::SeqCst);
                return Ok(());
            }
            let layer = Arc::new(std::mem::take(&mut o.pending));
            o.committing.push(layer.clone());
            (layer, upto)
        };
        let result = (|| {
            let mut dict = self.dict.read().unwrap_or_else(|p| p.into_inner()).clone();
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            let delta = write_layer(&tx, &self.tables, &mut dict, &layer)?;
            // New codes are visible to readers before the records that use them.
            *self.dict.write().unwrap_or_else(|p| p.into_inner()) = dict;
            tx.commit()?;
            Ok::<_, StoreError>(delta)
        })();
        match result {
            Ok(delta) => {
                {
                    let mut aggs = lock(&self.aggs);
                    for (k, d) in delta {
                        *aggs.entry(k).or_default() += d;
                    }
                }
                self.commits.fetch_add(1, Ordering::SeqCst);
                for (model, changes) in &layer.records {
                    let Some(table) = self.tables.get(model).filter(|t| t.schema.on_disk) else { continue };
                    let mut cache = lock(&table.cache);
                    for (id, r) in changes {
                        match r {
                            Some(r) => cache.insert(r.clone()),
                            None => cache.remove(*id),
                        }
                    }
                }
                lock(&self.overlay).committing.retain(|l| !Arc::ptr_eq(l, &layer));
                self.flushed.fetch_max(upto, Ordering::SeqCst);
                *lock(&self.last_commit) = Some((Instant::now(), Ok(())));
                Ok(())
            }
            Err(e) => {
                // The layer stays visible (the callers that wrote it already updated
                // their own state); nothing more is written until a restart, which
                // reads the last durable state.
                let reason = e.to_string();
                tracing::error!(error = %reason, path = %self.path.display(), "a store commit failed: writes are refused until a restart");
                *lock(&self.failed) = Some(reason.clone());
                *lock(&self.last_commit) = Some((Instant::now(), Err(reason.clone())));
                Err(StoreError::Unwritable { path: self.path.clone(), reason })
            }
        }
    }

    fn free_bytes(&self) -> Result<u64, String> {
        let mut cached = lock(&self.free_space);
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return r.clone();
        }
        let r = layout::free_bytes(&self.path);
        *cached = Some((Instant::now(), r.clone()));
        r
    }
}

impl Store {
    /// Opens (or creates, or migrates from version 1) the store in `dir` holding `models`.
    pub fn open(dir: &Path, models: &[&'static str]) -> Result<Store, StoreError> {
        Store::open_with(dir, models, StoreOptions::default())
    }

    pub fn open_with(dir: &Path, models: &[&'static str], options: StoreOptions) -> Result<Store, StoreError> {
        let lock_file = layout::prepare_dir(dir)?;
        let mut tables = FxHashMap::default();
        for model in models {
            let mut schema = schema::of(model);
            schema.on_disk &= !options.in_memory;
            tables.insert(*model, Table::new(schema, options.record_cache));
        }
        let db = layout::open_db(dir, &tables, options.cache_bytes)?;
        let inner = Inner {
            db,
            tables,
            dict: RwLock::new(Dict::default()),
            overlay: Mutex::new(Overlay::default()),
            commit_lock: Mutex::new(()),
            seqs: Mutex::new(HashMap::new()),
            schedule: Mutex::new(BTreeMap::new()),
            aggs: Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            failed: Mutex::new(None),
            last_commit: Mutex::new(None),
            free_space: Mutex::new(None),
            path: dir.to_path_buf(),
            _lock_file: lock_file,
        };
        inner.load()?;
        Ok(Store { inner: Arc::new(inner), write_lock: Mutex::new(()), flush_turn: tokio::sync::Mutex::new(()) })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether `model` lives on disk (read through indexes) rather than in memory.
    pub fn on_disk(&self, model: &str) -> bool {
        self.inner.tables.get(model).is_some_and(|t| t.schema.on_disk)
    }

    /// Serialises read-modify-write sequences. Hold it only around synchronous work,
    /// never across an `.await`.
    pub fn write_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.write_lock)
    }

    /// Allocates the next id of `model`: monotonic and never reused, even after unlink.
    pub fn next_id(&self, model: &str) -> Result<u64, StoreError> {
        Ok(self.next_ids(model, 1)?.start)
    }

    /// `n` consecutive new ids of `model` (stored with the next commit).
    pub fn next_ids(&self, model: &str, n: u64) -> Result<std::ops::Range<u64>, StoreError> {
        let last = {
            let mut seqs = lock(&self.inner.seqs);
            let last = seqs.entry(model.to_string()).or_insert(0);
            *last += n;
            *last
        };
        if n > 0 {
            let mut o = lock(&self.inner.overlay);
            let slot = o.pending.seqs.entry(model.to_string()).or_insert(0);
            *slot = (*slot).max(last);
            self.inner.written.fetch_add(1, Ordering::SeqCst);
        }
        Ok(last + 1 - n..last + 1)
    }

    /// The record, or `None` (also when the disk cannot be read: that is logged).
    pub fn get(&self, model: &str, id: u64) -> Option<Arc<Record>> {
        match self.try_get(model, id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(model, id, error = %e, "cannot read a stored record");
                None
            }
        }
    }

    /// Every record of an in-memory model (`None` for the others) at one moment, lent
    /// by one shared snapshot: reading it moves no record's reference count, so readers
    /// on other threads do not take each other's cache lines.
    pub fn rows(&self, model: &str) -> Option<Arc<Rows>> {
        let rows = self.inner.tables.get(model)?.rows.as_ref()?;
        Some(rows.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    pub fn try_get(&self, model: &str, id: u64) -> Result<Option<Arc<Record>>, StoreError> {
        let inner = &self.inner;
        let Some(table) = inner.tables.get(model) else { return Ok(None) };
        if let Some(rows) = &table.rows {
            return Ok(rows.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned());
        }
        let commits = inner.commits.load(Ordering::SeqCst);
        if let Some(hit) = lock(&inner.overlay).record(model, id) {
            return Ok(hit);
        }
        if let Some(hit) = lock(&table.cache).get(id) {
            return Ok(Some(hit));
        }
        let Some(rec) = inner.read_record(table, id)? else { return Ok(None) };
        let rec = Arc::new(rec);
        let mut cache = lock(&table.cache);
        if inner.commits.load(Ordering::SeqCst) == commits {
            cache.insert(rec.clone());
        }
        Ok(Some(rec))
    }

    /// Every record of `model`, in id order. For runs and deliveries this reads the
    /// whole history from disk: use [`Store::scan`] or the indexed reads instead.
    pub fn list(&self, model: &str) -> Vec<Arc<Record>> {
        if let Some(rows) = self.inner.tables.get(model).and_then(|t| t.rows.as_ref()) {
            return rows.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        }
        let mut out = Vec::new();
        if let Err(e) = self.scan(model, false, |r| {
            out.push(r);
            ControlFlow::Continue(())
        }) {
            tracing::error!(model, error = %e, "cannot list stored records");
        }
        out
    }

    /// Calls `f` with every record of `model` in id order (newest first when `desc`)
    /// until it breaks, holding one record at a time.
    pub fn scan(
        &self,
        model: &str,
        desc: bool,
        mut f: impl FnMut(Arc<Record>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let table = inner.table(model)?;
        if let Some(rows) = &table.rows {
            let all = rows.read().unwrap_or_else(|p| p.into_inner()).clone();
            let iter: Box<dyn Iterator<Item = &Arc<Record>>> =
                if desc { Box::new(all.values().rev()) } else { Box::new(all.values()) };
            for r in iter {
                if f(r.clone()).is_break() {
                    break;
                }
            }
            return Ok(());
        }
        let overlay = lock(&inner.overlay).records(model);
        let mut over: Box<dyn Iterator<Item = (u64, Option<Arc<Record>>)>> =
            if desc { Box::new(overlay.into_iter().rev()) } else { Box::new(overlay.into_iter()) };
        let mut next_over = over.next();
        let before = |a: u64, b: u64| if desc { a > b } else { a < b };
        let tx = inner.db.begin_read()?;
        let t = tx.open_table(records_def(&table.records))?;
        let range = t.range::<u64>(..)?;
        let iter: Box<dyn Iterator<Item = _>> = if desc { Box::new(range.rev()) } else { Box::new(range) };
        for item in iter {
            let (k, v) = item?;
            let id = k.value();
            while let Some((oid, _)) = &next_over {
                if !before(*oid, id) {
                    break;
                }
                if let Some((_, Some(r))) = next_over.take()
                    && f(r).is_break()
                {
                    return Ok(());
                }
                next_over = over.next();
            }
            if next_over.as_ref().is_some_and(|(oid, _)| *oid == id) {
                if let Some((_, Some(r))) = next_over.take()
                    && f(r).is_break()
                {
                    return Ok(());
                }
                next_over = over.next();
                continue;
            }
            let rec = Arc::new(inner.decode(model, id, v.value())?);
            if f(rec).is_break() {
                return Ok(());
            }
        }
        while let Some((_, r)) = next_over {
            if let Some(r) = r
                && f(r).is_break()
            {
                return Ok(());
            }
            next_over = over.next();
        }
        Ok(())
    }

    /// Calls `f` with the id of every record of `model` whose `index` starts with the
    /// values `prefix`, in index order (reversed when `desc`): for an index over exactly
    /// the prefix's fields, that is id order.
    pub fn scan_index(
        &self,
        model: &str,
        index: &str,
        prefix: &[&Value],
        desc: bool,
        mut f: impl FnMut(u64) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        for id in self.index_ids(model, index, prefix, desc)? {
            if f(id?).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The ids [`Store::scan_index`] visits, as an iterator (it holds a read snapshot).
    pub fn index_ids(&self, model: &str, index: &str, prefix: &[&Value], desc: bool) -> Result<IndexIds, StoreError> {
        let inner = &self.inner;
        let table = inner.table(model)?;
        let (i, def) =
            table.index(index).ok_or_else(|| StoreError::UnknownModel(format!("{model} (no index {index:?})")))?;
        let start = codec::prefix(prefix);
        let end = codec::prefix_end(&start);
        // Overlaid records: their disk entries are stale; their own keys are merged in.
        let overlay = lock(&inner.overlay).records(model);
        let overridden: HashSet<u64> = overlay.keys().copied().collect();
        let mut extra: Vec<(Vec<u8>, u64)> = overlay
            .values()
            .flatten()
            .filter_map(|r| Some((def.key(r)?, r.id)))
            .filter(|(k, _)| k.starts_with(&start))
            .collect();
        extra.sort();
        if desc {
            extra.reverse();
        }
        let tx = inner.db.begin_read()?;
        let t = tx.open_table(index_def(&table.indexes[i]))?;
        let range = match &end {
            Some(end) => t.range::<&[u8]>(start.as_slice()..end.as_slice())?,
            None => t.range::<&[u8]>(start.as_slice()..)?,
        };
        let disk: DiskKeys = if desc { Box::new(range.rev()) } else { Box::new(range) };
        Ok(IndexIds { disk, next_disk: None, extra: extra.into_iter().peekable(), overridden, desc, done: false })
    }

    /// The newest id [`Store::index_ids`] would visit (the first in descending order),
    /// remembered until the table changes: the control plane asks it for every connector
    /// it shows (its last run), far more often than runs are written.
    pub fn newest_id(&self, model: &str, index: &str, prefix: &[&Value]) -> Result<Option<u64>, StoreError> {
        /// Answers a thread remembers at most (then it forgets them all).
        const MAX_REMEMBERED: usize = 4096;
        let table = self.inner.table(model)?;
        thread_local! {
            /// This thread's answers, by table, index and key prefix, each with the table
            /// generation it was read at; and the key, built here rather than allocated.
            /// Per thread, so that no look-up writes memory another thread reads.
            static MEMO: std::cell::RefCell<(Vec<u8>, Remembered)> =
                std::cell::RefCell::new((Vec::new(), FxHashMap::default()));
        }
        // Read before the index: a write in between bumps it, and the answer is dropped.
        let generation = table.generation.load(Ordering::SeqCst);
        let remembered = MEMO.with_borrow_mut(|(key, memo)| {
            key.clear();
            key.extend_from_slice(&table.uid.to_le_bytes());
            key.extend_from_slice(index.as_bytes());
            key.push(0);
            for v in prefix {
                codec::key_part(key, Some(v));
            }
            let key = MemoKey::new(key);
            match key.and_then(|k| memo.get(&k)) {
                Some((at, id)) if *at == generation => Ok(*id),
                _ => Err(key),
            }
        });
        let key = match remembered {
            Ok(hit) => return Ok(hit),
            Err(key) => key,
        };
        let found = self.index_ids(model, index, prefix, true)?.next().transpose()?;
        if let Some(key) = key
            && table.generation.load(Ordering::SeqCst) == generation
        {
            MEMO.with_borrow_mut(|(_, memo)| {
                if memo.len() >= MAX_REMEMBERED {
                    memo.clear();
                }
                memo.insert(key, (generation, found));
            });
        }
        Ok(found)
    }

    /// Up to `limit` records found through `index` (see [`Store::scan_index`]).
    pub fn find(
        &self,
        model: &str,
        index: &str,
        prefix: &[&Value],
        desc: bool,
        limit: usize,
    ) -> Result<Vec<Arc<Record>>, StoreError> {
        let mut ids = Vec::new();
        self.scan_index(model, index, prefix, desc, |id| {
            ids.push(id);
            if ids.len() >= limit { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.try_get(model, id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The distinct values of the first field of `index` (e.g. every connector that has
    /// runs), one seek per value.
    pub fn index_heads(&self, model: &str, index: &str) -> Result<Vec<Value>, StoreError> {
        let inner = &self.inner;
        let table = inner.table(model)?;
        let (i, def) =
            table.index(index).ok_or_else(|| StoreError::UnknownModel(format!("{model} (no index {index:?})")))?;
        let mut out: Vec<Value> = Vec::new();
        {
            let tx = inner.db.begin_read()?;
            let t = tx.open_table(index_def(&table.indexes[i]))?;
            let mut from: Vec<u8> = Vec::new();
            loop {
                let head = {
                    let Some(item) = t.range::<&[u8]>(from.as_slice()..)?.next() else { break };
                    let (k, _) = item?;
                    let key = k.value();
                    let Some((v, len)) = codec::first_part(key) else { break };
                    out.push(v);
                    key[..len].to_vec()
                };
                match codec::prefix_end(&head) {
                    Some(end) => from = end,
                    None => break,
                }
            }
        }
        let overlay = lock(&inner.overlay).records(model);
        for r in overlay.values().flatten().filter(|r| def.key(r).is_some()) {
            let v = r.values.get(def.fields[0]).cloned().unwrap_or(Value::Bool(false));
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// How many records `index` holds under `prefix`.
    pub fn count_index(&self, model: &str, index: &str, prefix: &[&Value]) -> Result<usize, StoreError> {
        let mut n = 0;
        self.scan_index(model, index, prefix, false, |_| {
            n += 1;
            ControlFlow::Continue(())
        })?;
        Ok(n)
    }

    /// A number that changes whenever a record of `model` is written or removed, so a
    /// reader can keep something derived from the table until it changes.
    pub fn generation(&self, model: &str) -> u64 {
        self.inner.tables.get(model).map_or(0, |t| t.generation.load(Ordering::SeqCst))
    }

    pub fn count(&self, model: &str) -> usize {
        self.try_count(model).unwrap_or_else(|e| {
            tracing::error!(model, error = %e, "cannot count stored records");
            0
        })
    }

    pub fn try_count(&self, model: &str) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let Some(table) = inner.tables.get(model) else { return Ok(0) };
        if let Some(rows) = &table.rows {
            return Ok(rows.read().unwrap_or_else(|p| p.into_inner()).len());
        }
        let overlay = lock(&inner.overlay).records(model);
        let tx = inner.db.begin_read()?;
        let t = tx.open_table(records_def(&table.records))?;
        let mut n = t.len()? as i64;
        for (id, r) in overlay {
            let on_disk = t.get(id)?.is_some();
            n += i64::from(r.is_some() && !on_disk) - i64::from(r.is_none() && on_disk);
        }
        Ok(n.max(0) as usize)
    }

    /// The committed number of records of `model` per value of a counted field (see
    /// [`schema::ModelSchema::counted`]); empty values under `""`.
    pub fn counts(&self, model: &str, field: &str) -> BTreeMap<String, i64> {
        let prefix = format!("count/{model}/{field}=");
        lock(&self.inner.aggs)
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), *v)))
            .collect()
    }

    /// The committed sum of a summed field (positive values) over every record of `model`.
    pub fn sum(&self, model: &str, field: &str) -> i64 {
        lock(&self.inner.aggs).get(&sum_key(model, field)).copied().unwrap_or(0)
    }

    /// Writes several records of one model atomically (all or none). Durable with the
    /// next [`Store::flush`].
    pub fn put_all(&self, model: &str, records: Vec<Record>) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let (name, table) =
            inner.tables.get_key_value(model).ok_or_else(|| StoreError::UnknownModel(model.to_string()))?;
        let records: Vec<Arc<Record>> = records.into_iter().map(Arc::new).collect();
        {
            let mut o = lock(&inner.overlay);
            let m = o.pending.records.entry(name).or_default();
            for r in &records {
                m.insert(r.id, Some(r.clone()));
            }
        }
        if let Some(rows) = &table.rows {
            let mut rows = rows.write().unwrap_or_else(|p| p.into_inner());
            let rows = Arc::make_mut(&mut rows).change();
            for r in records {
                rows.insert(r.id, r);
            }
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        table.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    pub fn put(&self, model: &str, record: Record) -> Result<(), StoreError> {
        self.put_all(model, vec![record])
    }

    /// Removes several records of one model atomically.
    pub fn remove_all(&self, model: &str, ids: &[u64]) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let (name, table) =
            inner.tables.get_key_value(model).ok_or_else(|| StoreError::UnknownModel(model.to_string()))?;
        {
            let mut o = lock(&inner.overlay);
            let m = o.pending.records.entry(name).or_default();
            for id in ids {
                m.insert(*id, None);
            }
        }
        if let Some(rows) = &table.rows {
            let mut rows = rows.write().unwrap_or_else(|p| p.into_inner());
            let rows = Arc::make_mut(&mut rows).change();
            for id in ids {
                rows.remove(id);
            }
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        table.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// When `connector` fires next (the schedule: kept apart from the connector record
    /// so that moving it costs one small write).
    pub fn schedule_get(&self, connector: u64) -> Option<DateTime<Utc>> {
        lock(&self.inner.schedule).get(&connector).and_then(|ms| DateTime::from_timestamp_millis(*ms))
    }

    /// Every scheduled connector and when it fires next.
    pub fn schedule_all(&self) -> Vec<(u64, DateTime<Utc>)> {
        lock(&self.inner.schedule)
            .iter()
            .filter_map(|(id, ms)| DateTime::from_timestamp_millis(*ms).map(|t| (*id, t)))
            .collect()
    }

    /// Sets (or with `None` clears) when connectors fire next; durable with the next
    /// [`Store::flush`], in the same commit as the runs written with it.
    pub fn schedule_set(&self, entries: &[(u64, Option<DateTime<Utc>>)]) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let mut schedule = lock(&inner.schedule);
        let mut o = lock(&inner.overlay);
        for (id, at) in entries {
            let ms = at.map(|t| t.timestamp_millis());
            match ms {
                Some(ms) => schedule.insert(*id, ms),
                None => schedule.remove(id),
            };
            o.pending.schedule.insert(*id, ms);
        }
        inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every write so far durable (one fsync). Await it before answering a
    /// client. Concurrent callers share one commit (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mine = inner.written.load(Ordering::SeqCst);
        if inner.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let _turn = self.flush_turn.lock().await;
        if inner.flushed.load(Ordering::SeqCst) >= mine {
            // A commit that started after our writes already made them durable.
            return Ok(());
        }
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || inner.commit_pending())
            .await
            .map_err(|e| StoreError::Unwritable { path: self.inner.path.clone(), reason: e.to_string() })?
    }

    /// Synchronous flush, for shutdown and tests.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.commit_pending()
    }

    /// Whether the store can write now, without writing: the failure of the last
    /// commit, if any, and the free space (cached for a second). Cheap enough for every
    /// `/ready` call.
    pub fn write_health(&self) -> WriteHealth {
        WriteHealth {
            failed: lock(&self.inner.failed).clone(),
            free_bytes: self.inner.free_bytes(),
            last_commit: lock(&self.inner.last_commit).clone(),
        }
    }

    /// The size of the store file on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(self.inner.path.join(STORE_FILE)).map_or(0, |m| m.len())
    }
}

impl Inner {
    /// Reads what is kept in memory: the dictionary, counters, schedule, counts and the
    /// in-memory models' records.
    fn load(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        {
            let mut dict = self.dict.write().unwrap_or_else(|p| p.into_inner());
            let mut seqs = lock(&self.seqs);
            let mut aggs = lock(&self.aggs);
            for item in meta.iter()? {
                let (k, v) = item?;
                let (k, v) = (k.value(), v.value());
                if let Some(code) = k.strip_prefix("dict/").and_then(|c| c.parse::<u32>().ok()) {
                    dict.insert(code, &String::from_utf8_lossy(v));
                } else if let Some(model) = k.strip_prefix("seq/") {
                    seqs.insert(model.to_string(), v.try_into().map_or(0, u64::from_be_bytes));
                } else if k.starts_with("count/") || k.starts_with("sum/") {
                    aggs.insert(k.to_string(), v.try_into().map_or(0, i64::from_be_bytes));
                }
            }
        }
        {
            let mut schedule = lock(&self.schedule);
            for item in tx.open_table(SCHEDULE)?.iter()? {
                let (k, v) = item?;
                schedule.insert(k.value(), v.value());
            }
        }
        for table in self.tables.values() {
            let t = tx.open_table(records_def(&table.records))?;
            // Ids are never reused: the counter is at least the largest id stored.
            if let Some(item) = t.last()? {
                let top = item.0.value();
                let mut seqs = lock(&self.seqs);
                let last = seqs.entry(table.schema.model.to_string()).or_insert(0);
                *last = (*last).max(top);
            }
            if let Some(rows) = &table.rows {
                let mut rows = rows.write().unwrap_or_else(|p| p.into_inner());
                let rows = Arc::make_mut(&mut rows).change();
                for item in t.iter()? {
                    let (k, v) = item?;
                    let id = k.value();
                    rows.insert(id, Arc::new(self.decode(table.schema.model, id, v.value())?));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: u64, connector: u64, state: &str) -> Record {
        let mut r = Record { id, ..Default::default() };
        r.set("connector_id", connector);
        r.set("state", state);
        r.set("records_expected", 10);
        r
    }

    const RUN: &str = crate::model::run::MODEL;

    #[test]
    fn ids_are_monotonic_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), &["m"]).unwrap();
            assert_eq!(s.next_id("m").unwrap(), 1);
            let id = s.next_id("m").unwrap();
            s.put("m", Record { id, ..Default::default() }).unwrap();
            s.remove_all("m", &[id]).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path(), &["m"]).unwrap();
        assert_eq!(s.next_id("m").unwrap(), 3);
        assert_eq!(s.next_ids("m", 3).unwrap(), 4..7);
        assert_eq!(s.next_ids("m", 0).unwrap(), 7..7);
        assert_eq!(s.next_id("m").unwrap(), 7);
        assert_eq!(s.count("m"), 0);
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), &["m"]).unwrap();
        let err = Store::open(dir.path(), &["m"]).err().unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &["m"]).unwrap());
        {
            let db = redb::Database::create(dir.path().join(STORE_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("schema_version", (SCHEMA_VERSION + 1).to_be_bytes().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let err = Store::open(dir.path(), &["m"]).err().unwrap().to_string();
        assert!(err.contains("newer mts-connector"), "{err}");
    }

    #[test]
    fn runs_live_on_disk_and_are_found_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), &[RUN]).unwrap();
            let ids = s.next_ids(RUN, 6).unwrap();
            let runs: Vec<Record> = ids
                .map(|id| run(id, if id % 2 == 0 { 2 } else { 1 }, if id < 5 { "done" } else { "queued" }))
                .collect();
            s.put_all(RUN, runs).unwrap();
            // Seen before the commit, through the overlay.
            assert_eq!(s.count(RUN), 6);
            let latest: Vec<u64> =
                s.find(RUN, "connector", &[&json!(2)], true, 2).unwrap().iter().map(|r| r.id).collect();
            assert_eq!(latest, vec![6, 4]);
            s.flush_blocking().unwrap();
            // Changing a run's state moves it between index entries.
            s.put(RUN, run(6, 2, "done")).unwrap();
            let queued: Vec<u64> =
                s.find(RUN, "state", &[&json!("queued")], false, 10).unwrap().iter().map(|r| r.id).collect();
            assert_eq!(queued, vec![5]);
            s.flush_blocking().unwrap();
            s.remove_all(RUN, &[1]).unwrap();
            s.flush_blocking().unwrap();
            assert_eq!(s.counts(RUN, "state").get("done"), Some(&4));
            assert_eq!(s.sum(RUN, "records_expected"), 50);
        }
        let s = Store::open(dir.path(), &[RUN]).unwrap();
        assert_eq!(s.count(RUN), 5);
        assert!(s.get(RUN, 1).is_none());
        assert_eq!(s.get(RUN, 6).unwrap().str("state"), Some("done"));
        let latest: Vec<u64> = s.find(RUN, "connector", &[&json!(2)], true, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(latest, vec![6, 4, 2]);
        assert_eq!(s.count_index(RUN, "state", &[&json!("queued")]).unwrap(), 1);
        assert_eq!(s.counts(RUN, "state").get("queued"), Some(&1));
        let mut seen = Vec::new();
        s.scan(RUN, true, |r| {
            seen.push(r.id);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec![6, 5, 4, 3, 2]);
        assert_eq!(s.next_id(RUN).unwrap(), 7);
    }

    #[test]
    fn the_newest_id_of_an_index_follows_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &[RUN]).unwrap();
        let (one, two) = (json!(1), json!(2));
        let newest = |c: &Value| s.newest_id(RUN, "connector", &[c]).unwrap();
        assert_eq!(newest(&one), None);
        s.put_all(RUN, vec![run(1, 1, "done"), run(2, 2, "done")]).unwrap();
        // Remembered answers are read again after each write, committed or not.
        assert_eq!((newest(&one), newest(&two)), (Some(1), Some(2)));
        assert_eq!(newest(&one), Some(1));
        s.put(RUN, run(3, 1, "queued")).unwrap();
        assert_eq!((newest(&one), newest(&two)), (Some(3), Some(2)));
        s.flush_blocking().unwrap();
        assert_eq!(newest(&one), Some(3));
        s.remove_all(RUN, &[3]).unwrap();
        assert_eq!(newest(&one), Some(1));
        s.remove_all(RUN, &[1]).unwrap();
        s.flush_blocking().unwrap();
        assert_eq!((newest(&one), newest(&two)), (None, Some(2)));
        // A different index with the same key prefix is answered on its own.
        assert_eq!(s.newest_id(RUN, "connector_top", &[&two]).unwrap(), Some(2));
        // A key too long to be remembered inline is answered afresh every time.
        let state = |st: &str| s.newest_id(RUN, "state", &[&json!(st)]).unwrap();
        let long = "a state name far longer than what the memo holds inline: 55 bytes";
        assert_eq!((state("done"), state(long)), (Some(2), None));
        s.put(RUN, run(4, 2, long)).unwrap();
        assert_eq!((state("done"), state(long)), (Some(2), Some(4)));
        s.remove_all(RUN, &[4]).unwrap();
        assert_eq!(state(long), None);
    }

    #[test]
    fn two_stores_on_one_thread_do_not_share_remembered_answers() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (Store::open(d1.path(), &[RUN]).unwrap(), Store::open(d2.path(), &[RUN]).unwrap());
        let one = json!(1);
        a.put(RUN, run(7, 1, "done")).unwrap();
        // Both tables are at the same generation: only the table tells them apart.
        b.put(RUN, run(9, 1, "done")).unwrap();
        assert_eq!(a.newest_id(RUN, "connector", &[&one]).unwrap(), Some(7));
        assert_eq!(b.newest_id(RUN, "connector", &[&one]).unwrap(), Some(9));
        assert_eq!(a.newest_id(RUN, "connector", &[&one]).unwrap(), Some(7));
    }

    #[test]
    fn an_in_memory_snapshot_keeps_what_it_lent_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        const C: &str = crate::model::connector::MODEL;
        let s = Store::open(dir.path(), &[C]).unwrap();
        let rec = |id: u64, name: &str| {
            let mut r = Record { id, ..Default::default() };
            r.set("name", name);
            r
        };
        s.put_all(C, vec![rec(1, "a"), rec(2, "b")]).unwrap();
        let before = s.rows(C).expect("connectors are held in memory");
        s.put(C, rec(2, "b2")).unwrap();
        s.remove_all(C, &[1]).unwrap();
        s.put(C, rec(3, "c")).unwrap();
        // The snapshot is the table as it was; the table itself moved on.
        let names = |rows: &Rows| rows.values().map(|r| (r.id, r.str("name").unwrap().to_string())).collect::<Vec<_>>();
        assert_eq!(names(&before), vec![(1, "a".into()), (2, "b".into())]);
        assert_eq!(names(&s.rows(C).unwrap()), vec![(2, "b2".into()), (3, "c".into())]);
        assert_eq!(s.get(C, 2).unwrap().str("name"), Some("b2"));
        assert!(s.rows(RUN).is_none(), "runs live on disk");
    }

    #[test]
    fn the_schedule_is_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let at = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        {
            let s = Store::open(dir.path(), &["m"]).unwrap();
            s.schedule_set(&[(1, Some(at)), (2, Some(at))]).unwrap();
            s.schedule_set(&[(2, None)]).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path(), &["m"]).unwrap();
        assert_eq!(s.schedule_get(1), Some(at));
        assert_eq!(s.schedule_all(), vec![(1, at)]);
    }
}
