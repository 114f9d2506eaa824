//! The snapshot of an in-memory model: its records by id, and the searches answered
//! from it.
//!
//! A search whose domain and order read only the records' own values is a function of
//! the snapshot alone, so its ordered ids are remembered beside the records it was
//! answered from: Odoo's list views ask the same search over and over (every user, every
//! page, every refresh), and between two writes the answer cannot change. A write
//! starts from a snapshot without remembered searches, so none outlives the records it
//! describes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::model::fields::Record;

/// Searches a snapshot remembers at most (the oldest is forgotten first).
pub const MAX_SEARCHES: usize = 16;

/// A remembered search: its key (see `api::orm`) and every match's id, in order.
type Search = (Box<str>, Arc<[u64]>);

/// The records of an in-memory model by id, and the searches remembered for them.
/// Reads see the records through `Deref`; writes go through [`Rows::change`].
#[derive(Default)]
pub struct Rows {
    records: BTreeMap<u64, Arc<Record>>,
    searches: Mutex<Vec<Search>>,
}

impl Clone for Rows {
    /// The same records, without the remembered searches (a clone is made to be changed).
    fn clone(&self) -> Rows {
        Rows { records: self.records.clone(), searches: Mutex::default() }
    }
}

impl std::ops::Deref for Rows {
    type Target = BTreeMap<u64, Arc<Record>>;
    fn deref(&self) -> &Self::Target {
        &self.records
    }
}

impl Rows {
    /// The records, to be changed: every remembered search is forgotten first.
    pub fn change(&mut self) -> &mut BTreeMap<u64, Arc<Record>> {
        self.searches.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
        &mut self.records
    }

    /// The ids remembered for search `key` (see [`Rows::remember`]).
    pub fn remembered(&self, key: &str) -> Option<Arc<[u64]>> {
        let searches = self.searches.lock().unwrap_or_else(|p| p.into_inner());
        searches.iter().find(|(k, _)| **k == *key).map(|(_, ids)| ids.clone())
    }

    /// How many ids are remembered for any search whose key starts with `prefix` (its
    /// domain, whatever its order).
    pub fn remembered_len(&self, prefix: &str) -> Option<usize> {
        let searches = self.searches.lock().unwrap_or_else(|p| p.into_inner());
        searches.iter().find(|(k, _)| k.starts_with(prefix)).map(|(_, ids)| ids.len())
    }

    /// Remembers `ids`, every match of search `key` in its order, found in this very
    /// snapshot.
    pub fn remember(&self, key: &str, ids: Arc<[u64]>) {
        let mut searches = self.searches.lock().unwrap_or_else(|p| p.into_inner());
        if searches.iter().any(|(k, _)| **k == *key) {
            return;
        }
        if searches.len() >= MAX_SEARCHES {
            searches.remove(0);
        }
        searches.push((key.into(), ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_or_a_copy_forgets_the_searches_and_the_bound_holds() {
        let mut rows = Rows::default();
        rows.change().insert(1, Arc::new(Record { id: 1, ..Default::default() }));
        rows.remember("[]\0id", Arc::from([1u64].as_slice()));
        assert_eq!(rows.remembered("[]\0id").as_deref(), Some([1u64].as_slice()));
        assert_eq!(rows.remembered_len("[]\0"), Some(1));
        assert!(rows.clone().remembered("[]\0id").is_none(), "a copy is made to be changed");
        rows.change();
        assert!(rows.remembered("[]\0id").is_none());
        for i in 0..=MAX_SEARCHES {
            rows.remember(&format!("k{i}"), Arc::from([].as_slice()));
        }
        assert!(rows.remembered("k0").is_none(), "the oldest is forgotten");
        assert!(rows.remembered(&format!("k{MAX_SEARCHES}")).is_some());
        assert_eq!(rows.searches.lock().unwrap().len(), MAX_SEARCHES);
    }
}
