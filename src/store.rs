//! The embedded store: one sled tree per model, Odoo-like ids (monotonic, never
//! reused), a schema version checked at start, and durable writes.
//!
//! Every model's records are also kept in memory (they are small and few: connectors,
//! runs within retention, deliveries), so reads and searches never touch the disk;
//! sled is the durable copy, written through on every change.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::model::fields::Record;

/// The layout version this build writes. A data dir with a newer one is refused.
pub const SCHEMA_VERSION: u32 = 1;

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
    Sled(#[from] sled::Error),
    #[error("stored record {model}/{id} is unreadable: {message}")]
    Corrupt { model: String, id: u64, message: String },
    #[error("unknown model {0}")]
    UnknownModel(String),
}

struct Table {
    tree: sled::Tree,
    rows: RwLock<BTreeMap<u64, Arc<Record>>>,
    /// Bumped by every change of the table (see [`Store::generation`]).
    generation: AtomicU64,
}

pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    tables: HashMap<&'static str, Table>,
    write_lock: Mutex<()>,
    /// Group commit: every change bumps `written`; a flush records how far it got in
    /// `flushed`, so callers whose changes an earlier flush already covered return at
    /// once and concurrent callers share one fsync.
    written: AtomicU64,
    flushed: AtomicU64,
    flush_turn: tokio::sync::Mutex<()>,
    path: PathBuf,
    _lock_file: File,
}

fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

impl Store {
    /// Opens (or creates) the store in `dir` holding `models`.
    pub fn open(dir: &Path, models: &[&'static str]) -> Result<Store, StoreError> {
        let io = |source| StoreError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_file = File::options().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(io)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let db = sled::Config::new().path(dir.join("db")).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 4]));
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema { path: dir.to_path_buf(), found });
                }
            }
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
        }
        let mut tables = HashMap::new();
        for model in models {
            let tree = db.open_tree(model)?;
            let mut rows = BTreeMap::new();
            for item in tree.iter() {
                let (k, v) = item?;
                let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default());
                let rec: Record = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    model: model.to_string(),
                    id,
                    message: e.to_string(),
                })?;
                rows.insert(id, Arc::new(rec));
            }
            tables.insert(*model, Table { tree, rows: RwLock::new(rows), generation: AtomicU64::new(0) });
        }
        Ok(Store {
            db,
            meta,
            tables,
            write_lock: Mutex::new(()),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_turn: tokio::sync::Mutex::new(()),
            path: dir.to_path_buf(),
            _lock_file: lock_file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn table(&self, model: &str) -> Result<&Table, StoreError> {
        self.tables.get(model).ok_or_else(|| StoreError::UnknownModel(model.to_string()))
    }

    /// Serialises read-modify-write sequences. Hold it only around synchronous work,
    /// never across an `.await`.
    pub fn write_lock(&self) -> MutexGuard<'_, ()> {
        // A poisoned lock only means another writer panicked; the guarded data is `()`.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates the next id of `model`: monotonic and never reused, even after unlink.
    pub fn next_id(&self, model: &str) -> Result<u64, StoreError> {
        Ok(self.next_ids(model, 1)?.start)
    }

    /// `n` consecutive new ids of `model` in one write.
    pub fn next_ids(&self, model: &str, n: u64) -> Result<std::ops::Range<u64>, StoreError> {
        let seq_key = format!("seq/{model}");
        let last = self.meta.update_and_fetch(seq_key.as_bytes(), |old| {
            let last = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((last + n).to_be_bytes().to_vec())
        })?;
        let last = last.and_then(|b| b.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(n);
        Ok(last + 1 - n..last + 1)
    }

    pub fn get(&self, model: &str, id: u64) -> Option<Arc<Record>> {
        let table = self.tables.get(model)?;
        table.rows.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// A snapshot of every record of `model`, in id order.
    pub fn list(&self, model: &str) -> Vec<Arc<Record>> {
        self.tables
            .get(model)
            .map(|t| t.rows.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect())
            .unwrap_or_default()
    }

    /// A number that changes whenever a record of `model` is written or removed, so a
    /// reader can keep something derived from the table until it changes.
    pub fn generation(&self, model: &str) -> u64 {
        self.tables.get(model).map_or(0, |t| t.generation.load(Ordering::SeqCst))
    }

    pub fn count(&self, model: &str) -> usize {
        self.tables.get(model).map_or(0, |t| t.rows.read().unwrap_or_else(|p| p.into_inner()).len())
    }

    /// Writes several records of one model atomically (all or none).
    pub fn put_all(&self, model: &str, records: Vec<Record>) -> Result<(), StoreError> {
        let table = self.table(model)?;
        let mut batch = sled::Batch::default();
        for rec in &records {
            let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt {
                model: model.to_string(),
                id: rec.id,
                message: e.to_string(),
            })?;
            batch.insert(&key(rec.id), bytes);
        }
        table.tree.apply_batch(batch)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        let mut rows = table.rows.write().unwrap_or_else(|p| p.into_inner());
        for rec in records {
            rows.insert(rec.id, Arc::new(rec));
        }
        table.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    pub fn put(&self, model: &str, record: Record) -> Result<(), StoreError> {
        self.put_all(model, vec![record])
    }

    /// Removes several records of one model atomically.
    pub fn remove_all(&self, model: &str, ids: &[u64]) -> Result<(), StoreError> {
        let table = self.table(model)?;
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&key(*id));
        }
        table.tree.apply_batch(batch)?;
        self.written.fetch_add(1, Ordering::SeqCst);
        let mut rows = table.rows.write().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            rows.remove(id);
        }
        table.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Makes every write so far durable (fsync). Await it before answering a client.
    /// Concurrent callers share one fsync (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mine = self.written.load(Ordering::SeqCst);
        let _turn = self.flush_turn.lock().await;
        if self.flushed.load(Ordering::SeqCst) >= mine {
            // A flush that started after our writes already made them durable.
            return Ok(());
        }
        let upto = self.written.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        self.flushed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Synchronous flush, for shutdown.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        {
            let s = Store::open(dir.path(), &["m"]).unwrap();
            s.meta.insert("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes()).unwrap();
            s.flush_blocking().unwrap();
        }
        let err = Store::open(dir.path(), &["m"]).err().unwrap().to_string();
        assert!(err.contains("newer mts-connector"), "{err}");
    }
}
