//! A bounded cache of decoded records: two generations of at most `capacity` entries
//! each; a hit in the old one moves the entry to the young one, and when the young one
//! is full it becomes the old one (the previous old one is dropped). Memory stays at
//! `2 * capacity` records whatever the history, and recently used records stay.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::fields::Record;

#[derive(Default)]
pub struct GenCache {
    capacity: usize,
    young: HashMap<u64, Arc<Record>>,
    old: HashMap<u64, Arc<Record>>,
}

impl GenCache {
    pub fn new(capacity: usize) -> GenCache {
        GenCache { capacity, young: HashMap::new(), old: HashMap::new() }
    }

    pub fn get(&mut self, id: u64) -> Option<Arc<Record>> {
        if let Some(r) = self.young.get(&id) {
            return Some(r.clone());
        }
        let r = self.old.remove(&id)?;
        self.insert(r.clone());
        Some(r)
    }

    pub fn insert(&mut self, rec: Arc<Record>) {
        if self.capacity == 0 {
            return;
        }
        self.old.remove(&rec.id);
        if self.young.len() >= self.capacity && !self.young.contains_key(&rec.id) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(rec.id, rec);
    }

    pub fn remove(&mut self, id: u64) {
        self.young.remove(&id);
        self.old.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_what_is_used() {
        let mut c = GenCache::new(2);
        for id in 1..=10 {
            c.insert(Arc::new(Record { id, ..Default::default() }));
            assert!(c.len() <= 4);
            assert!(c.get(1).is_some() || id > 1, "1 is read every time, so it stays");
        }
        c.remove(1);
        assert!(c.get(1).is_none());
    }
}
