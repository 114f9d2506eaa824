//! The data dir: its modes, the lock, and how the store file comes to exist.
//!
//! - The dir is 0700 and every file in it 0600 (tightened at each start: the store
//!   holds secrets in clear).
//! - A new store is initialised as `store.redb.tmp` and renamed to `store.redb` only
//!   after its first durable commit, so a start that fails half-way (a full disk) never
//!   leaves a store file that a later start cannot open; a stale `.tmp` is deleted.
//! - A version-1 dir (`db/`, sled, one tree per model holding JSON) is migrated into a
//!   `.tmp` the same way; the rename is the commit point, and `db/` is removed after it.
//!   A crash before the rename leaves `db/` intact (the next start migrates again); a
//!   crash after it leaves a complete `store.redb`, which wins.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use redb::{Durability, ReadableDatabase, TableHandle};

use super::codec::Dict;
use super::{
    Layer, META, SCHEDULE, SCHEMA_VERSION, STORE_FILE, StoreError, Tables, index_def, records_def, write_layer,
};
use crate::model::fields::Record;

const V1_DIR: &str = "db";

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Creates `dir` (0700) or tightens it, takes the lock, and makes every file in it 0600.
pub(super) fn prepare_dir(dir: &Path) -> Result<File, StoreError> {
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    }
    tighten(dir).map_err(io(dir))?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join("lock"))
        .map_err(io(dir))?;
    match lock_file.try_lock() {
        Ok(()) => Ok(lock_file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(dir)(e)),
    }
}

/// 0700 for `dir` and the dirs below it, 0600 for the files.
fn tighten(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tighten(&entry.path())?;
        } else if kind.is_file() {
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode & 0o700))?;
            }
        }
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter
    // that statvfs fills in; it is read only when the call succeeded.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = redb::Database::builder();
    b.set_cache_size(cache_bytes);
    // Called (repeatedly) only when the file was not closed cleanly: a crash, a kill or a
    // power cut. Nothing committed is lost; redb rebuilds its free-space map by walking
    // the file (about a second per GB) before the store opens.
    let told = std::sync::atomic::AtomicBool::new(false);
    b.set_repair_callback(move |session| {
        if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("the store was not closed cleanly (a crash or a kill): checking it before the start");
        }
        if session.progress() >= 1.0 {
            tracing::info!("store checked");
        }
    });
    b
}

/// Opens `store.redb`, creating or migrating it first when needed.
pub(super) fn open_db(dir: &Path, tables: &Tables, cache_bytes: usize) -> Result<redb::Database, StoreError> {
    let file = dir.join(STORE_FILE);
    let tmp = dir.join(format!("{STORE_FILE}.tmp"));
    let v1 = dir.join(V1_DIR);
    if tmp.exists() {
        tracing::warn!(path = %tmp.display(), "removing a store file left by an interrupted start or migration");
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    }
    if !file.exists() {
        let db = builder(cache_bytes).create(&tmp)?;
        if v1.exists() && !v1_is_empty(&v1) {
            migrate(&v1, &db, tables)?;
        } else {
            initialise(&db, tables, None)?;
        }
        drop(db);
        std::fs::rename(&tmp, &file).map_err(io(&file))?;
        fsync_dir(dir)?;
    }
    if v1.exists() {
        // Migrated (or never written: a v1 start that failed on a full disk left empty
        // files that no later start could open).
        std::fs::remove_dir_all(&v1).map_err(io(&v1))?;
        fsync_dir(dir)?;
        tracing::info!(path = %v1.display(), "removed the version-1 store (its data is in store.redb)");
    }
    let db = builder(cache_bytes).open(&file)?;
    let version = {
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        meta.get("schema_version")?.map(|v| v.value().try_into().map_or(u32::MAX, u32::from_be_bytes))
    };
    match version {
        Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema { path: dir.to_path_buf(), found: v }),
        Some(_) => {}
        None => {
            return Err(StoreError::Corrupt {
                model: "meta".into(),
                id: 0,
                message: format!("{} has no schema version", file.display()),
            });
        }
    }
    ensure_tables(&db, tables)?;
    Ok(db)
}

/// Creates the tables of models this store did not hold yet (a write only when needed,
/// so a start on a full disk that needs none writes nothing).
fn ensure_tables(db: &redb::Database, tables: &Tables) -> Result<(), StoreError> {
    let existing: std::collections::HashSet<String> = {
        let tx = db.begin_read()?;
        tx.list_tables()?.map(|t| t.name().to_string()).collect()
    };
    let missing =
        tables.values().any(|t| !existing.contains(&t.records) || t.indexes.iter().any(|i| !existing.contains(i)))
            || !existing.contains(SCHEDULE.name());
    if missing {
        let tx = db.begin_write()?;
        create_tables(&tx, tables)?;
        tx.commit()?;
    }
    Ok(())
}

fn create_tables(tx: &redb::WriteTransaction, tables: &Tables) -> Result<(), StoreError> {
    tx.open_table(META)?;
    tx.open_table(SCHEDULE)?;
    for t in tables.values() {
        tx.open_table(records_def(&t.records))?;
        for i in &t.indexes {
            tx.open_table(index_def(i))?;
        }
    }
    Ok(())
}

/// Writes the tables and the schema version in one durable commit.
fn initialise(db: &redb::Database, tables: &Tables, migrated_from: Option<u32>) -> Result<(), StoreError> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    create_tables(&tx, tables)?;
    {
        let mut meta = tx.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())?;
        if let Some(v) = migrated_from {
            meta.insert("migrated_from", v.to_be_bytes().as_slice())?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A v1 dir whose files (but its `conf`) are all empty never held data: a first start
/// that failed on a full disk, which every later start refused as "corrupted".
fn v1_is_empty(v1: &Path) -> bool {
    fn bytes(p: &Path, top: bool) -> u64 {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => bytes(&e.path(), false),
                    _ if top && e.file_name() == "conf" => 0,
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
    }
    bytes(v1, true) == 0
}

/// What version 1 kept differently inside a record: a started one-time connector marked
/// the run its start queued in `last_run_id` (now derived from the runs), so its window
/// is not queued again after the migration.
fn upgrade_v1(model: &str, rec: &mut Record) {
    use crate::model::connector;
    if model == connector::MODEL
        && rec.str("is_recurring") == Some("onetime")
        && let Some(run) = rec.int("last_run_id")
    {
        rec.set(connector::ONETIME_RUN, run);
    }
}

/// Copies a version-1 store into `db` (the `.tmp` file): records re-encoded, indexes
/// and counts built, ids' counters kept; the last commit is durable.
fn migrate(v1: &Path, db: &redb::Database, tables: &Tables) -> Result<(), StoreError> {
    let err = |message: String| StoreError::Migration { path: v1.to_path_buf(), message };
    let old = sled::Config::new()
        .path(v1)
        .cache_capacity(16 << 20)
        .open()
        .map_err(|e| err(format!("{e}; the version-1 data is left as it is")))?;
    let meta = old.open_tree("meta").map_err(|e| err(e.to_string()))?;
    match meta.get("schema_version").map_err(|e| err(e.to_string()))? {
        Some(v) if v.as_ref() == 1u32.to_be_bytes() => {}
        Some(v) => return Err(err(format!("unexpected schema version {:?}", v.as_ref()))),
        None => return Err(err("no schema version".into())),
    }
    initialise(db, tables, Some(1))?;
    let mut dict = Dict::default();
    let mut counted = 0usize;
    let mut seqs = HashMap::new();
    for item in meta.scan_prefix("seq/") {
        let (k, v) = item.map_err(|e| err(e.to_string()))?;
        let model = String::from_utf8_lossy(&k["seq/".len()..]).to_string();
        seqs.insert(model, v.as_ref().try_into().map_or(0, u64::from_be_bytes));
    }
    let mut commit = |layer: Layer, durable: bool| -> Result<(), StoreError> {
        let mut tx = db.begin_write()?;
        tx.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        write_layer(&tx, tables, &mut dict, &layer)?;
        tx.commit()?;
        Ok(())
    };
    for (model, table) in tables {
        let tree = old.open_tree(model).map_err(|e| err(e.to_string()))?;
        let mut layer = Layer::default();
        for item in tree.iter() {
            let (k, v) = item.map_err(|e| err(e.to_string()))?;
            let id = k.as_ref().try_into().map_or(0, u64::from_be_bytes);
            let mut rec: Record =
                serde_json::from_slice(&v).map_err(|e| err(format!("record {model}/{id} is unreadable: {e}")))?;
            upgrade_v1(table.schema.model, &mut rec);
            layer.records.entry(table.schema.model).or_default().insert(id, Some(Arc::new(rec)));
            counted += 1;
            if layer.records.values().map(|r| r.len()).sum::<usize>() >= 5000 {
                commit(std::mem::take(&mut layer), false)?;
            }
        }
        commit(layer, false)?;
    }
    let layer = Layer { seqs, ..Layer::default() };
    commit(layer, true)?;
    tracing::info!(path = %v1.display(), records = counted, "migrated the version-1 store to schema version 2");
    Ok(())
}
