//! The generic model methods every Odoo client expects (`fields_get`, `search`,
//! `read`, `create`, `write`, `unlink`, `copy`, ...), over any [`ModelDef`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::error::OdooError;
use crate::model::domain::{self, Domain, FieldValues, OrderKey};
use crate::model::fields::{FieldType, ModelDef, Record};
use crate::model::{self, ModelError, format_datetime};
use crate::store::Store;

/// Every model the service holds, for lookups by name.
static MODELS: [&ModelDef; 3] = [&model::connector::CONNECTOR, &model::run::RUN, &model::delivery::DELIVERY];

pub fn models() -> &'static [&'static ModelDef] {
    &MODELS
}

pub fn model_def(name: &str) -> Option<&'static ModelDef> {
    models().iter().copied().find(|m| m.name == name)
}

/// The largest answer a call may build, in bytes of JSON (the envelope adds a few).
pub const MAX_ANSWER: usize = 10 << 20;

/// Counts the size of an answer while it is built, so a call stops as soon as its answer
/// passes [`MAX_ANSWER`] instead of building it whole first.
pub struct AnswerBudget {
    left: usize,
    /// Running out means "run this read again off the worker thread", not "too large".
    offload: bool,
}

impl Default for AnswerBudget {
    fn default() -> Self {
        if super::blocking::inline() {
            return AnswerBudget { left: super::blocking::INLINE_ANSWER, offload: true };
        }
        // Room for the JSON-RPC envelope around the result.
        AnswerBudget { left: MAX_ANSWER - 4096, offload: false }
    }
}

impl AnswerBudget {
    /// Counts `part` (one element of the answer); an error once the answer is too large.
    pub fn charge(&mut self, part: &Value) -> Result<(), OdooError> {
        match self.left.checked_sub(json_size(part) + 1) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None if self.offload => Err(OdooError::Offload),
            None => Err(too_large()),
        }
    }

    /// Counts `n` bytes of one element of the answer (see [`AnswerBudget::charge`]).
    pub fn charge_len(&mut self, n: usize) -> Result<(), OdooError> {
        match self.left.checked_sub(n + 1) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None if self.offload => Err(OdooError::Offload),
            None => Err(too_large()),
        }
    }

    /// Adds one element, written by `write`, to the JSON list being built in `out`
    /// (empty before the first), charging it.
    pub fn push_json(
        &mut self,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), OdooError>,
    ) -> Result<(), OdooError> {
        out.push(if out.is_empty() { b'[' } else { b',' });
        let start = out.len();
        write(out)?;
        self.charge_len(out.len() - start)
    }

    /// The JSON list [`AnswerBudget::push_json`] built in `out`.
    pub fn finish_json(mut out: Vec<u8>) -> Result<String, OdooError> {
        if out.is_empty() {
            out.push(b'[');
        }
        out.push(b']');
        // Only serde_json and ASCII punctuation wrote it.
        String::from_utf8(out).map_err(|e| OdooError::Internal(format!("an answer is not UTF-8: {e}")))
    }

    /// A JSON list of `items`, each written by `write`, charging each as it comes.
    pub fn json_list<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Vec<u8>, T) -> Result<(), OdooError>,
    ) -> Result<String, OdooError> {
        let mut out = Vec::with_capacity(ANSWER_START);
        for item in items {
            self.push_json(&mut out, |out| write(out, item))?;
        }
        Self::finish_json(out)
    }

    /// Collects `parts`, charging each as it comes.
    pub fn collect(&mut self, parts: impl Iterator<Item = Result<Value, OdooError>>) -> Result<Value, OdooError> {
        let mut out = Vec::new();
        for part in parts {
            let part = part?;
            self.charge(&part)?;
            out.push(part);
        }
        Ok(Value::Array(out))
    }
}

/// Bytes reserved for an answer before it is written (a page of a list fits).
const ANSWER_START: usize = 4096;

fn too_large() -> OdooError {
    OdooError::Value(format!(
        "The answer would be larger than {MAX_ANSWER} bytes: ask for fewer records or fields at a time (limit and offset)"
    ))
}

/// Writes `v` as compact JSON (serde_json's bytes) to `out`.
pub fn write_json(out: &mut Vec<u8>, v: &(impl serde::Serialize + ?Sized)) -> Result<(), OdooError> {
    serde_json::to_writer(out, v).map_err(|e| OdooError::Internal(format!("an answer could not be written: {e}")))
}

/// The length of `v` serialized as compact JSON (as `serde_json` writes it), counted
/// without writing it.
pub fn json_size(v: &Value) -> usize {
    fn digits(mut n: u64) -> usize {
        let mut d = 1;
        while n >= 10 {
            n /= 10;
            d += 1;
        }
        d
    }
    fn string(s: &str) -> usize {
        2 + s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..0x20 => 6,
                _ => 1,
            })
            .sum::<usize>()
    }
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + usize::from(!b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => digits(u),
            (None, Some(i)) => 1 + digits(i.unsigned_abs()),
            _ => n.to_string().len(),
        },
        Value::String(s) => string(s),
        Value::Array(items) => 2 + items.len().saturating_sub(1) + items.iter().map(json_size).sum::<usize>(),
        Value::Object(map) => {
            2 + map.len().saturating_sub(1) + map.iter().map(|(k, v)| string(k) + 1 + json_size(v)).sum::<usize>()
        }
    }
}

/// Ids named in an error message at most; more are counted.
const MAX_IDS_SHOWN: usize = 20;

pub fn missing(model: &ModelDef, ids: &[u64]) -> OdooError {
    let mut list: Vec<String> = ids.iter().take(MAX_IDS_SHOWN).map(u64::to_string).collect();
    if ids.len() > MAX_IDS_SHOWN {
        list.push(format!("and {} more", ids.len() - MAX_IDS_SHOWN));
    }
    OdooError::Missing(format!(
        "Record does not exist or has been deleted.\n(Record: {}({},), User: 2)",
        model.name,
        list.join(", ")
    ))
}

fn invalid_field(model: &ModelDef, field: &str) -> OdooError {
    OdooError::Value(format!("Invalid field {field:?} on model {:?}", model.name))
}

pub fn display_name(model: &ModelDef, rec: &Record) -> Value {
    match model.rec_name.and_then(|f| rec.str(f)) {
        Some(name) => Value::String(name.into()),
        None => Value::String(format!("{},{}", model.name, rec.id)),
    }
}

/// What a snapshot remembers a search by: its domain as the client wrote it, then
/// its order (a count looks for any order of the domain, the key without the order).
fn search_key(domain: Option<&Value>, order: Option<&str>) -> String {
    let mut key = domain.and_then(|d| serde_json::to_string(d).ok()).unwrap_or_else(|| "[]".into());
    key.push('\0');
    key.push_str(order.unwrap_or_default());
    key
}

/// One column of an answer: what a field name was looked up to.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    Id,
    DisplayName,
    Field(&'static crate::model::fields::FieldDef),
    /// A connector's `next_run_at`: the store's schedule first, then the record.
    NextRun(&'static crate::model::fields::FieldDef),
    /// A connector's `last_run_id`: its newest top-level run (else the record's own).
    LastRun(&'static crate::model::fields::FieldDef),
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Id => "id",
            Column::DisplayName => "display_name",
            Column::Field(f) | Column::NextRun(f) | Column::LastRun(f) => f.name,
        }
    }

    /// The column of field `f` of `model`: the connector's two fields kept apart from
    /// its record are told here, once per answer, not on every row.
    fn of(model: &ModelDef, f: &'static crate::model::fields::FieldDef) -> Column {
        match (model.name == model::connector::MODEL, f.name) {
            (true, "next_run_at") => Column::NextRun(f),
            (true, "last_run_id") => Column::LastRun(f),
            _ => Column::Field(f),
        }
    }
}

/// A record a search looked at: lent by an in-memory model's snapshot (no reference
/// count moves), or held when it was read from disk.
enum Hit<'s> {
    Lent(&'s Arc<Record>),
    Held(Arc<Record>),
}

impl Hit<'_> {
    fn into_arc(self) -> Arc<Record> {
        match self {
            Hit::Lent(r) => r.clone(),
            Hit::Held(r) => r,
        }
    }
}

impl std::ops::Deref for Hit<'_> {
    type Target = Record;
    fn deref(&self) -> &Record {
        match self {
            Hit::Lent(r) => r,
            Hit::Held(r) => r,
        }
    }
}

/// Reads records through one snapshot of the store.
pub struct Reader<'a> {
    pub store: &'a Store,
    pub model: &'static ModelDef,
}

impl Reader<'_> {
    /// One field of a record as Odoo shows it (many2one as `[id, name]`), borrowed from
    /// the record when it is stored as shown.
    pub fn value_ref<'r>(&self, rec: &'r Record, field: &str) -> Result<Cow<'r, Value>, OdooError> {
        Ok(self.column_value(rec, self.column(field)?))
    }

    /// The column of `field` (`id`, `display_name` or one of the model's fields).
    pub fn column(&self, field: &str) -> Result<Column, OdooError> {
        Ok(match field {
            "id" => Column::Id,
            "display_name" => Column::DisplayName,
            _ => Column::of(self.model, self.model.field(field).ok_or_else(|| invalid_field(self.model, field))?),
        })
    }

    /// One field of a record as Odoo shows it, its definition at hand.
    fn field_value<'r>(&self, rec: &'r Record, f: &'static crate::model::fields::FieldDef) -> Cow<'r, Value> {
        let v = rec.odoo_value_ref(f);
        if let (FieldType::Many2one(target), Some(id)) = (f.ftype, v.as_u64()) {
            let name = model_def(target)
                .and_then(|t| self.store.get(t.name, id).map(|r| display_name(t, &r)))
                .unwrap_or_else(|| Value::String(format!("{target},{id}")));
            return Cow::Owned(Value::Array(vec![Value::from(id), name]));
        }
        v
    }

    /// The columns of a `read` answer with `fields` (every field when `None`), after the
    /// `id` that comes first: each field once, where it was first asked for (as in a
    /// dict), looked up once for the whole answer.
    pub fn columns(&self, fields: Option<&[&str]>) -> Result<Vec<Column>, OdooError> {
        let Some(fields) = fields else {
            let mut all: Vec<Column> = self.model.fields.iter().map(|f| Column::of(self.model, f)).collect();
            all.push(Column::DisplayName);
            return Ok(all);
        };
        // Each name is a field of the model (or refused), so `out` stays short and a
        // repeated name is found in it without hashing.
        let mut out: Vec<Column> = Vec::with_capacity(fields.len().min(self.model.fields.len() + 1));
        for f in fields {
            if *f != "id" && !out.iter().any(|c| c.name() == *f) {
                out.push(self.column(f)?);
            }
        }
        Ok(out)
    }

    /// A record's value in one column, as Odoo shows it.
    pub fn column_value<'r>(&self, rec: &'r Record, column: Column) -> Cow<'r, Value> {
        match column {
            Column::Id => Cow::Owned(Value::from(rec.id)),
            Column::DisplayName => Cow::Owned(display_name(self.model, rec)),
            Column::Field(f) => self.field_value(rec, f),
            // A connector's next fire, once the engine keeps it in the store's schedule
            // table (apart from the record), is read from there.
            Column::NextRun(f) => match self.store.schedule_get(rec.id) {
                Some(at) => Cow::Owned(Value::String(format_datetime(at))),
                None => self.field_value(rec, f),
            },
            // A connector's last run is its newest top-level run (one index seek): runs are
            // made without rewriting the connector record.
            Column::LastRun(f) => {
                let last = last_run(self.store, rec.id).or_else(|| rec.field(f).and_then(Value::as_u64));
                Cow::Owned(match last.and_then(|id| self.store.get(model::run::MODEL, id)) {
                    Some(run) => Value::Array(vec![Value::from(run.id), display_name(&model::run::RUN, &run)]),
                    None => Value::Bool(false),
                })
            }
        }
    }

    /// A record as a `read` dict (`id`, then `columns`), written straight to `out` as the
    /// JSON serde_json writes for that dict, without building it.
    pub fn render_json(&self, out: &mut Vec<u8>, rec: &Record, columns: &[Column]) -> Result<(), OdooError> {
        out.extend_from_slice(b"{\"id\":");
        write_json(out, &rec.id)?;
        for c in columns {
            out.push(b',');
            // Field names need no escape (a test checks every model's).
            out.push(b'"');
            out.extend_from_slice(c.name().as_bytes());
            out.push(b'"');
            out.push(b':');
            write_json(out, &*self.column_value(rec, *c))?;
        }
        out.push(b'}');
        Ok(())
    }

    /// Parses and checks a domain and an order against the model.
    fn query(&self, domain: Option<&Value>, order: Option<&str>) -> Result<(Domain, Vec<OrderKey>), OdooError> {
        let domain = match domain {
            None => Domain::True,
            Some(d) => Domain::parse(d).map_err(|e| OdooError::Value(format!("Invalid domain: {e}")))?,
        };
        for field in domain.fields() {
            let base = field.split('.').next().unwrap_or(field);
            match self.model.field(base) {
                Some(f) if f.secret => {
                    return Err(OdooError::Value(format!("Field {base:?} is write-only and cannot be searched")));
                }
                None if !matches!(base, "id" | "display_name") => return Err(invalid_field(self.model, base)),
                _ => {}
            }
        }
        let keys = domain::parse_order(order).map_err(OdooError::Value)?;
        for k in &keys {
            if k.field != "id" && self.model.field(&k.field).is_none_or(|f| f.secret) {
                return Err(OdooError::Value(format!(
                    "Invalid order field {:?} on model {:?}",
                    k.field, self.model.name
                )));
            }
        }
        Ok((domain, keys))
    }

    /// The records matching `domain`, ordered, then offset and limited.
    pub fn search(
        &self,
        domain: Option<&Value>,
        offset: usize,
        limit: Option<usize>,
        order: Option<&str>,
    ) -> Result<Vec<Arc<Record>>, OdooError> {
        let rows = self.store.rows(self.model.name);
        // An in-memory model's snapshot may remember this very search.
        let key = rows.as_ref().map(|_| search_key(domain, order));
        if let (Some(rows), Some(key)) = (&rows, &key)
            && let Some(ids) = rows.remembered(key)
        {
            let page = ids.iter().skip(offset).take(limit.unwrap_or(usize::MAX));
            return Ok(page.filter_map(|id| rows.get(id).cloned()).collect());
        }
        let (domain, keys) = self.query(domain, order)?;
        let by_id = keys.len() == 1 && keys[0].field == "id";
        // A sorted search of the snapshot that reads only the records' own values is
        // remembered whole (every match, in order); any other keeps only its page.
        let remember = key.filter(|_| !by_id && self.reads_own_values(&domain, &keys));
        let want = if remember.is_some() { None } else { limit.map(|l| l.saturating_add(offset)) };
        let mut hits: Vec<Hit<'_>> = Vec::with_capacity(want.map_or(64, |w| w.saturating_mul(2).clamp(64, 1024)));
        if by_id {
            // Matches arrive in id order: stop as soon as the page is full.
            self.matching(rows.as_deref(), &domain, keys[0].descending, |rec| {
                hits.push(rec);
                if want.is_some_and(|w| hits.len() >= w) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            })?;
        } else {
            // With a limit only the best `offset + limit` are kept (memory follows the
            // page, not the matches): sorted and cut each time twice as many are held.
            let columns = keys.iter().map(|k| self.column(&k.field)).collect::<Result<Vec<_>, _>>()?;
            let best = |hits: &mut Vec<Hit<'_>>, keep: usize| {
                // Each record's sort values, looked up once and lent by the record.
                let n = columns.len();
                let mut values: Vec<Cow<'_, Value>> = Vec::with_capacity(hits.len() * n);
                values.extend(hits.iter().flat_map(|r| columns.iter().map(|c| self.column_value(r, *c))));
                let mut order: Vec<usize> = (0..hits.len()).collect();
                order.sort_by(|&a, &b| {
                    for (i, k) in keys.iter().enumerate() {
                        let ord = domain::compare(&values[a * n + i], &values[b * n + i]);
                        let ord = if k.descending { ord.reverse() } else { ord };
                        if ord != Ordering::Equal {
                            return ord;
                        }
                    }
                    hits[a].id.cmp(&hits[b].id)
                });
                order.truncate(keep);
                drop(values);
                let mut taken: Vec<Option<Hit<'_>>> = hits.drain(..).map(Some).collect();
                hits.extend(order.into_iter().filter_map(|i| taken[i].take()));
            };
            self.matching(rows.as_deref(), &domain, false, |rec| {
                hits.push(rec);
                if let Some(w) = want
                    && hits.len() >= w.saturating_mul(2).max(64)
                {
                    best(&mut hits, w);
                }
                ControlFlow::Continue(())
            })?;
            best(&mut hits, usize::MAX);
            if let (Some(rows), Some(key)) = (rows.as_deref(), remember) {
                rows.remember(&key, hits.iter().map(|h| h.id).collect());
            }
        }
        Ok(hits.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).map(Hit::into_arc).collect())
    }

    /// How many records match `domain` (streamed: nothing is kept).
    pub fn count(&self, domain: Option<&Value>) -> Result<usize, OdooError> {
        let rows = self.store.rows(self.model.name);
        if let Some(n) = rows.as_ref().and_then(|r| r.remembered_len(&search_key(domain, None))) {
            return Ok(n);
        }
        let (domain, _) = self.query(domain, None)?;
        let mut n = 0;
        self.matching(rows.as_deref(), &domain, false, |_| {
            n += 1;
            ControlFlow::Continue(())
        })?;
        Ok(n)
    }

    /// Whether `domain` and `order` read only each record's own values: not another
    /// table (a many2one's name, a dotted path, a connector's schedule or last run).
    fn reads_own_values(&self, domain: &Domain, order: &[OrderKey]) -> bool {
        let own = |field: &str| match self.column(field) {
            Ok(Column::Id | Column::DisplayName) => true,
            Ok(Column::Field(f)) => !matches!(f.ftype, FieldType::Many2one(_)),
            _ => false,
        };
        domain.fields().into_iter().all(own) && order.iter().all(|k| own(&k.field))
    }

    /// Calls `f` with every record matching `domain`, in id order (newest first when
    /// `desc`). On-disk models are read through the best index for the domain's
    /// top-level equalities (e.g. `connector_id = X`), else streamed from the table; a
    /// record is held only while `f` looks at it. An in-memory model's records are
    /// lent by `rows`, its snapshot ([`Store::rows`]).
    fn matching<'s>(
        &self,
        rows: Option<&'s crate::store::Rows>,
        domain: &Domain,
        desc: bool,
        mut f: impl FnMut(Hit<'s>) -> ControlFlow<()>,
    ) -> Result<(), OdooError> {
        let model = self.model.name;
        // Each record looked at and the domain's evaluation are charged to one budget for
        // the whole search (a small one when tried on a worker thread).
        let inline = super::blocking::inline();
        let mut budget = domain::Budget::new(if inline { super::blocking::INLINE_WORK } else { domain::SEARCH_BUDGET });
        let expensive = std::cell::Cell::new(None);
        let check = || match expensive.get() {
            None => Ok(()),
            Some(_) if inline => Err(OdooError::Offload),
            Some(e) => Err(OdooError::Value(format!("Invalid domain: {e}"))),
        };
        // The domain's plain fields, looked up once for the whole search (each term then
        // finds its column by the very string it holds).
        let plain: Vec<(&str, Column)> = domain
            .fields()
            .into_iter()
            .filter(|f| !f.contains('.'))
            .filter_map(|f| Some((f, self.column(f).ok()?)))
            .collect();
        let mut test = |rec: Hit<'s>| {
            let get = |field: &str| match plain.iter().find(|(p, _)| std::ptr::eq(*p, field)) {
                Some((_, c)) => FieldValues::One(self.column_value(&rec, *c)),
                None => self.path_values(&rec, field),
            };
            match budget.charge(1).and_then(|()| domain.matches_within(&get, &mut budget)) {
                Ok(true) => f(rec),
                Ok(false) => ControlFlow::Continue(()),
                Err(e) => {
                    expensive.set(Some(e));
                    ControlFlow::Break(())
                }
            }
        };
        let store_err = |e: crate::store::StoreError| OdooError::from(e);
        if let Some(rows) = rows {
            let mut all: Box<dyn Iterator<Item = &Arc<Record>>> =
                if desc { Box::new(rows.values().rev()) } else { Box::new(rows.values()) };
            let _ = all.try_for_each(|r| test(Hit::Lent(r)));
            return check();
        }
        let Some((index, prefixes)) = self.index_for(domain).filter(|_| self.store.on_disk(model)) else {
            let scanned = self.store.scan(model, desc, |r| test(Hit::Held(r))).map_err(store_err);
            return scanned.and_then(|()| check());
        };
        // One id-ordered stream per prefix (`connector_id in [..]` has several), merged.
        let mut streams = Vec::with_capacity(prefixes.len());
        for p in &prefixes {
            let refs: Vec<&Value> = p.iter().collect();
            streams.push(self.store.index_ids(model, index, &refs, desc).map_err(store_err)?.peekable());
        }
        let mut last = None;
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, s) in streams.iter_mut().enumerate() {
                match s.peek() {
                    Some(Ok(id)) if best.is_none_or(|(_, b)| if desc { *id > b } else { *id < b }) => {
                        best = Some((i, *id));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        if let Some(Err(e)) = s.next() {
                            return Err(store_err(e));
                        }
                    }
                    None => {}
                }
            }
            let Some((i, id)) = best else { return check() };
            streams[i].next();
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            if let Some(rec) = self.store.try_get(model, id).map_err(store_err)?
                && test(Hit::Held(rec)).is_break()
            {
                return check();
            }
        }
    }

    /// An index all of whose fields have a top-level `=` or `in` term in `domain`
    /// (the longest such index), with the key prefixes to read: one per combination of
    /// the values (at most 256). Only values the index orders exactly qualify: ids for
    /// many2one and integer fields, non-empty strings for the others. The whole domain is
    /// still evaluated on every record read.
    fn index_for(&self, domain: &Domain) -> Option<(&'static str, Vec<Vec<Value>>)> {
        fn terms<'d>(d: &'d Domain, out: &mut Vec<(&'d str, domain::Op, &'d Value)>) {
            match d {
                Domain::And(a, b) => {
                    terms(a, out);
                    terms(b, out);
                }
                Domain::Term { field, op: op @ (domain::Op::Eq | domain::Op::In), value } => {
                    out.push((field.as_str(), *op, value))
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        terms(domain, &mut found);
        let exact = |field: &str, v: &Value| match self.model.field(field).map(|f| f.ftype) {
            Some(FieldType::Many2one(_) | FieldType::Integer) => v.as_i64().is_some(),
            Some(FieldType::Char | FieldType::Text | FieldType::Selection(_) | FieldType::Datetime) => {
                v.as_str().is_some_and(|s| !s.is_empty())
            }
            _ => false,
        };
        // The values a field may take under the domain's top-level terms.
        let values_of = |field: &str| -> Option<Vec<Value>> {
            found.iter().filter(|(f, _, _)| *f == field).find_map(|(_, op, v)| match op {
                domain::Op::Eq => exact(field, v).then(|| vec![(*v).clone()]),
                _ => {
                    let list = v.as_array()?;
                    (list.len() <= 256 && list.iter().all(|x| exact(field, x))).then(|| list.clone())
                }
            })
        };
        let mut best: Option<(&'static str, usize, Vec<Vec<Value>>)> = None;
        for index in crate::store::schema::of(self.model.name).indexes {
            let Some(per_field) = index.fields.iter().map(|f| values_of(f)).collect::<Option<Vec<_>>>() else {
                continue;
            };
            let mut prefixes: Vec<Vec<Value>> = vec![Vec::new()];
            for values in per_field {
                prefixes = prefixes
                    .iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut p = p.clone();
                            p.push(v.clone());
                            p
                        })
                    })
                    .collect();
                if prefixes.len() > 256 {
                    break;
                }
            }
            if prefixes.len() <= 256 && best.as_ref().is_none_or(|(_, n, _)| *n < index.fields.len()) {
                best = Some((index.name, index.fields.len(), prefixes));
            }
        }
        best.map(|(name, _, prefixes)| (name, prefixes))
    }

    /// The values of a (possibly dotted, through many2one) field path.
    fn path_values<'r>(&self, rec: &'r Record, path: &str) -> FieldValues<'r> {
        let Some((head, rest)) = path.split_once('.') else {
            return FieldValues::One(self.value_ref(rec, path).unwrap_or(Cow::Owned(Value::Bool(false))));
        };
        let target = self.model.field(head).and_then(|f| match f.ftype {
            FieldType::Many2one(t) => model_def(t),
            _ => None,
        });
        match (target, rec.int(head)) {
            (Some(t), Some(id)) => match self.store.get(t.name, id as u64) {
                // The related record is read here, not kept: its values are copied.
                Some(r) => Reader { store: self.store, model: t }.path_values(&r, rest).into_owned(),
                None => FieldValues::Many(vec![]),
            },
            _ => FieldValues::Many(vec![]),
        }
    }

    /// `read`: the records of `ids` as a JSON list of dicts (every id must exist).
    pub fn read_json(&self, ids: &[u64], fields: Option<&[&str]>) -> Result<String, OdooError> {
        let columns = self.columns(fields)?;
        if super::blocking::inline() && ids.len() > super::blocking::INLINE_IDS {
            return Err(OdooError::Offload);
        }
        let mut absent = Vec::new();
        let (mut budget, mut out) = (AnswerBudget::default(), Vec::with_capacity(ANSWER_START));
        for id in ids {
            match self.store.get(self.model.name, *id) {
                Some(rec) if absent.is_empty() => {
                    budget.push_json(&mut out, |out| self.render_json(out, &rec, &columns))?
                }
                Some(_) => {}
                None => absent.push(*id),
            }
        }
        if absent.is_empty() { AnswerBudget::finish_json(out) } else { Err(missing(self.model, &absent)) }
    }

    /// The stored records for `ids`, all of them or a MissingError.
    pub fn records(&self, ids: &[u64]) -> Result<Vec<Arc<Record>>, OdooError> {
        let mut absent = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.store.get(self.model.name, *id) {
                Some(rec) => out.push(rec),
                None => absent.push(*id),
            }
        }
        if absent.is_empty() { Ok(out) } else { Err(missing(self.model, &absent)) }
    }
}

pub fn fields_get(model: &ModelDef, only: Option<&[&str]>, attributes: Option<&[&str]>) -> Value {
    let mut out = Map::new();
    for f in model.fields {
        if only.is_some_and(|o| !o.contains(&f.name)) {
            continue;
        }
        let mut d = f.describe();
        if let (Some(attrs), Value::Object(map)) = (attributes, &mut d) {
            map.retain(|k, _| attrs.contains(&k.as_str()));
        }
        out.insert(f.name.to_string(), d);
    }
    if only.is_none_or(|o| o.contains(&"id")) {
        out.insert("id".into(), json!({"type": "integer", "string": "ID", "required": false, "readonly": true}));
    }
    if only.is_none_or(|o| o.contains(&"display_name")) {
        out.insert(
            "display_name".into(),
            json!({"type": "char", "string": "Display Name", "required": false, "readonly": true}),
        );
    }
    Value::Object(out)
}

pub fn default_get(model: &ModelDef, fields: Option<&[&str]>) -> Value {
    let mut out = Map::new();
    for f in model.fields {
        if f.secret || fields.is_some_and(|o| !o.contains(&f.name)) {
            continue;
        }
        if let Some(v) = f.default.value() {
            out.insert(f.name.to_string(), v);
        }
    }
    Value::Object(out)
}

fn refuse_readonly_model(model: &ModelDef) -> Result<(), OdooError> {
    if model.writable {
        Ok(())
    } else {
        Err(OdooError::Access(format!(
            "{} records are kept by the service and cannot be changed over the API",
            model.name
        )))
    }
}

fn finish(model: &ModelDef, rec: &Record, now: DateTime<Utc>) -> Result<(), ModelError> {
    model::check_required(model, rec)?;
    if let Some(validate) = model.validate {
        validate(rec, now)?;
    }
    Ok(())
}

/// Creates records from `vals_list`; all are checked before any is stored.
pub fn create(
    store: &Store,
    model: &'static ModelDef,
    vals_list: &[&Map<String, Value>],
    now: DateTime<Utc>,
) -> Result<Vec<u64>, OdooError> {
    refuse_readonly_model(model)?;
    let stamp = Value::String(format_datetime(now));
    let mut records = Vec::with_capacity(vals_list.len());
    for vals in vals_list {
        let mut rec = Record::default();
        model::apply_defaults(model, &mut rec);
        model::apply_vals(model, &mut rec, vals)?;
        finish(model, &rec, now)?;
        rec.set("create_date", stamp.clone());
        rec.set("write_date", stamp.clone());
        records.push(rec);
    }
    let _guard = store.write_lock();
    for rec in &mut records {
        rec.id = store.next_id(model.name)?;
    }
    let ids = records.iter().map(|r| r.id).collect();
    store.put_all(model.name, records)?;
    Ok(ids)
}

/// Writes `vals` on every record of `ids`; all or none.
pub fn write(
    store: &Store,
    model: &'static ModelDef,
    ids: &[u64],
    vals: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(), OdooError> {
    refuse_readonly_model(model)?;
    let _guard = store.write_lock();
    let reader = Reader { store, model };
    let mut changed = Vec::with_capacity(ids.len());
    for rec in reader.records(ids)? {
        let mut rec = (*rec).clone();
        model::apply_vals(model, &mut rec, vals)?;
        finish(model, &rec, now)?;
        rec.set("write_date", format_datetime(now));
        changed.push(rec);
    }
    store.put_all(model.name, changed)?;
    Ok(())
}

pub fn unlink(store: &Store, model: &'static ModelDef, ids: &[u64]) -> Result<(), OdooError> {
    refuse_readonly_model(model)?;
    let _guard = store.write_lock();
    let reader = Reader { store, model };
    for rec in reader.records(ids)? {
        if let Some(check) = model.check_unlink {
            check(&rec)?;
        }
    }
    store.remove_all(model.name, ids)?;
    Ok(())
}

/// Applies a state change computed from each record; all or none.
pub fn update_each(
    store: &Store,
    model: &'static ModelDef,
    ids: &[u64],
    now: DateTime<Utc>,
    change: impl Fn(&mut Record) -> Result<(), ModelError>,
) -> Result<Vec<Record>, OdooError> {
    let _guard = store.write_lock();
    let reader = Reader { store, model };
    let mut changed = Vec::with_capacity(ids.len());
    for rec in reader.records(ids)? {
        let mut rec = (*rec).clone();
        change(&mut rec)?;
        rec.set("write_date", format_datetime(now));
        changed.push(rec);
    }
    store.put_all(model.name, changed.clone())?;
    Ok(changed)
}

/// The newest top-level run of `connector` (not a split part nor a walk's page).
pub fn last_run(store: &Store, connector: u64) -> Option<u64> {
    let (c, top) = (Value::from(connector), Value::Null);
    store.newest_id(model::run::MODEL, "connector_top", &[&c, &top]).unwrap_or_else(|e| {
        tracing::warn!(connector_id = connector, error = %e, "cannot read the connector's last run");
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_search_answers_as_a_fresh_one_and_is_forgotten_at_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::server::MODELS).unwrap();
        const C: &str = model::connector::MODEL;
        let connector = |id: u64, name: &str, kind: &str| {
            let mut r = Record { id, ..Default::default() };
            r.set("name", name);
            r.set("is_recurring", kind);
            r.set("cron_id", 7);
            r
        };
        store
            .put_all(
                C,
                vec![connector(1, "b", "recurring"), connector(2, "a", "recurring"), connector(3, "c", "onetime")],
            )
            .unwrap();
        let reader = Reader { store: &store, model: &model::connector::CONNECTOR };
        let domain = json!([["is_recurring", "=", "recurring"]]);
        let ids = |offset, limit, order| -> Vec<u64> {
            reader.search(Some(&domain), offset, limit, Some(order)).unwrap().iter().map(|r| r.id).collect()
        };
        let remembered = |order| store.rows(C).unwrap().remembered(&search_key(Some(&domain), Some(order)));
        assert_eq!(ids(0, Some(1), "name"), vec![2]);
        // Remembered whole: every match in order, whatever the page asked.
        assert_eq!(remembered("name").as_deref(), Some([2u64, 1].as_slice()));
        assert_eq!(ids(1, None, "name"), vec![1], "the next page, from what is remembered");
        assert_eq!(reader.count(Some(&domain)).unwrap(), 2);
        // A write: the next search and count see it.
        store.put(C, connector(3, "0", "recurring")).unwrap();
        assert!(remembered("name").is_none());
        assert_eq!(reader.count(Some(&domain)).unwrap(), 3, "counted afresh");
        assert_eq!(ids(0, None, "name"), vec![3, 2, 1]);
        assert_eq!(ids(0, None, "name desc"), vec![1, 2, 3]);
        store.remove_all(C, &[2]).unwrap();
        assert_eq!(ids(0, None, "name"), vec![3, 1]);
        // A search that reads another table (the schedule, a many2one's name) is not
        // remembered: that table moves without touching the connectors.
        assert_eq!(ids(0, None, "next_run_at, id"), vec![1, 3]);
        assert!(remembered("next_run_at, id").is_none());
        let by_cron = json!([["cron_id", "=", 7]]);
        assert_eq!(reader.search(Some(&by_cron), 0, None, Some("name")).unwrap().len(), 2);
        assert!(store.rows(C).unwrap().remembered(&search_key(Some(&by_cron), Some("name"))).is_none());
    }

    #[test]
    fn a_sorted_page_is_the_same_whether_the_kept_records_are_cut_or_not() {
        // 300 matches with a page of 10: the kept records are sorted and cut many times
        // on the way (each time 64 are held), which must not change the page.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::server::MODELS).unwrap();
        let runs: Vec<Record> = (1..=400u64)
            .map(|id| {
                let mut r = Record { id, ..Default::default() };
                r.set("connector_id", 1);
                r.set("state", if id % 4 == 0 { "failed" } else { "done" });
                // Few distinct values, so ties are broken by id.
                r.set("records_expected", (id * 7919) % 13);
                r
            })
            .collect();
        store.put_all(model::run::MODEL, runs.clone()).unwrap();
        let reader = Reader { store: &store, model: &model::run::RUN };
        let domain = json!([["state", "=", "done"]]);
        let done: Vec<&Record> = runs.iter().filter(|r| r.str("state") == Some("done")).collect();
        for (order, descending) in [("records_expected desc", true), ("records_expected", false)] {
            let mut expected: Vec<(i64, u64)> =
                done.iter().map(|r| (r.int("records_expected").unwrap(), r.id)).collect();
            expected.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) }.then(a.1.cmp(&b.1)));
            for (offset, limit) in [(0, Some(10)), (7, Some(10)), (290, Some(10)), (0, None)] {
                let page: Vec<u64> =
                    reader.search(Some(&domain), offset, limit, Some(order)).unwrap().iter().map(|r| r.id).collect();
                let want: Vec<u64> =
                    expected.iter().skip(offset).take(limit.unwrap_or(usize::MAX)).map(|(_, id)| *id).collect();
                assert_eq!(page, want, "{order} offset {offset} limit {limit:?}");
            }
        }
    }

    #[test]
    fn every_column_name_is_written_as_serde_json_writes_it() {
        // `render_json` writes column names between quotes as they are.
        for model in models() {
            let names = model.fields.iter().map(|f| f.name).chain([Column::Id.name(), Column::DisplayName.name()]);
            for name in names {
                assert_eq!(serde_json::to_string(name).unwrap(), format!("\"{name}\""), "{}.{name}", model.name);
            }
        }
    }

    #[test]
    fn json_size_is_the_length_serde_json_writes() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(9),
            json!(10),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(1.5),
            json!(-0.001),
            json!(1e300),
            json!(""),
            json!("quote \" backslash \\ newline \n tab \t cr \r bell \u{7} nul \u{0} del \u{7f} é 🦀"),
            json!([]),
            json!({}),
            json!([1, "two", [3, {"four": 4}], null]),
            json!({"id": 7, "name": "Registrations", "last_run_id": [12, "#12"], "next_run_at": false}),
        ];
        for v in &values {
            assert_eq!(json_size(v), serde_json::to_string(v).unwrap().len(), "{v}");
        }
    }
}
