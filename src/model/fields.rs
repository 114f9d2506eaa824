//! Field definitions and the generic record every model is stored as.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::secret::{MASK, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Char,
    Text,
    Integer,
    Boolean,
    Datetime,
    Selection(&'static [(&'static str, &'static str)]),
    /// A many2one to the named model; stored as the id, shown as `[id, display_name]`.
    Many2one(&'static str),
}

impl FieldType {
    pub fn odoo_name(self) -> &'static str {
        match self {
            FieldType::Char => "char",
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Datetime => "datetime",
            FieldType::Selection(_) => "selection",
            FieldType::Many2one(_) => "many2one",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    None,
    Str(&'static str),
    Int(i64),
    Bool(bool),
}

impl Default {
    pub fn value(self) -> Option<Value> {
        match self {
            Default::None => None,
            Default::Str(s) => Some(Value::String(s.into())),
            Default::Int(i) => Some(Value::from(i)),
            Default::Bool(b) => Some(Value::Bool(b)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub label: &'static str,
    pub ftype: FieldType,
    /// Required on every record (the Odoo field's `required=True`).
    pub required: bool,
    /// Set by the service only; clients cannot write it.
    pub readonly: bool,
    /// Write-only: answered as `false` or [`MASK`], kept in [`Record::secrets`].
    pub secret: bool,
    pub default: Default,
    pub help: &'static str,
}

impl FieldDef {
    pub const fn new(name: &'static str, label: &'static str, ftype: FieldType) -> Self {
        FieldDef {
            name,
            label,
            ftype,
            required: false,
            readonly: false,
            secret: false,
            default: Default::None,
            help: "",
        }
    }
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub const fn readonly(mut self) -> Self {
        self.readonly = true;
        self
    }
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    pub const fn default_str(mut self, s: &'static str) -> Self {
        self.default = Default::Str(s);
        self
    }
    pub const fn default_int(mut self, i: i64) -> Self {
        self.default = Default::Int(i);
        self
    }
    pub const fn default_bool(mut self, b: bool) -> Self {
        self.default = Default::Bool(b);
        self
    }
    pub const fn help(mut self, help: &'static str) -> Self {
        self.help = help;
        self
    }

    /// The `fields_get` description of this field.
    pub fn describe(&self) -> Value {
        let mut d = json!({
            "type": self.ftype.odoo_name(),
            "string": self.label,
            "required": self.required,
            "readonly": self.readonly,
            "store": true,
            "searchable": !self.secret,
            "sortable": !self.secret,
            "name": self.name,
        });
        if !self.help.is_empty() {
            d["help"] = Value::String(self.help.into());
        }
        match self.ftype {
            FieldType::Selection(options) => {
                d["selection"] = options.iter().map(|(v, l)| json!([v, l])).collect();
            }
            FieldType::Many2one(relation) => d["relation"] = Value::String(relation.into()),
            _ => {}
        }
        if self.secret {
            d["password"] = Value::Bool(true);
        }
        d
    }
}

/// A whole-record check (the clock comes in as an argument).
pub type Validator = fn(&Record, chrono::DateTime<chrono::Utc>) -> Result<(), super::ModelError>;
/// A check before a record is deleted.
pub type UnlinkCheck = fn(&Record) -> Result<(), super::ModelError>;

/// A model the service holds: its name, label and fields.
#[derive(Debug)]
pub struct ModelDef {
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldDef],
    /// The field shown as the record's `display_name`.
    pub rec_name: Option<&'static str>,
    /// Clients may create, write and unlink (false: read-only over the API).
    pub writable: bool,
    /// Whole-record checks run after every create, write and copy.
    pub validate: Option<Validator>,
    /// Refuses an unlink (e.g. of a running connector).
    pub check_unlink: Option<UnlinkCheck>,
}

impl ModelDef {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A record's plain values by field name, in the order they were set. Hashed with
/// FxHash rather than SipHash: the names are the model's own fields and the engine's
/// hidden values (a client's unknown field is refused before it gets here), so there is
/// no flooding to guard against, and every search and answer looks values up by name.
pub type Values = indexmap::IndexMap<Key, Value, rustc_hash::FxBuildHasher>;

/// The name of a value in a record. Names are interned: every record shares one copy of
/// each (the models' field names are the very strings of their [`FieldDef`]s), so a
/// look-up by a field's definition compares pointers and reads no key bytes. It hashes,
/// compares and serializes as the string it is. At most [`MAX_INTERNED`] names are
/// interned; any further one is owned by the record (never the case for the models'
/// fields and the engine's values, kept here only as a bound).
#[derive(Clone)]
pub struct Key(KeyRepr);

#[derive(Clone)]
enum KeyRepr {
    Shared(&'static str),
    Owned(Box<str>),
}

/// Most names [`Key::new`] interns (each is kept for the life of the process).
pub const MAX_INTERNED: usize = 4096;

type Names = std::sync::RwLock<rustc_hash::FxHashSet<&'static str>>;

static NAMES: std::sync::LazyLock<Names> = std::sync::LazyLock::new(|| {
    let models = [&super::connector::CONNECTOR, &super::run::RUN, &super::delivery::DELIVERY];
    Names::new(models.iter().flat_map(|m| m.fields.iter().map(|f| f.name)).collect())
});

impl Key {
    /// The key for `name`, interned when it can be.
    pub fn new(name: &str) -> Key {
        let shared = |names: &rustc_hash::FxHashSet<&'static str>| names.get(name).map(|s| Key(KeyRepr::Shared(s)));
        if let Some(k) = shared(&NAMES.read().unwrap_or_else(|p| p.into_inner())) {
            return k;
        }
        let mut names = NAMES.write().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = shared(&names) {
            return k;
        }
        if names.len() >= MAX_INTERNED {
            return Key(KeyRepr::Owned(name.into()));
        }
        let leaked: &'static str = Box::leak(name.into());
        names.insert(leaked);
        Key(KeyRepr::Shared(leaked))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            KeyRepr::Shared(s) => s,
            KeyRepr::Owned(s) => s,
        }
    }

    /// Whether this is `name` itself (the same bytes in memory), without reading it.
    fn is(&self, name: &'static str) -> bool {
        matches!(self.0, KeyRepr::Shared(s) if std::ptr::eq(s, name))
    }
}

impl std::ops::Deref for Key {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: `Values` is looked up by `&str`.
        self.as_str().hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Key {}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Key {
    fn from(name: &str) -> Key {
        Key::new(name)
    }
}

impl From<String> for Key {
    fn from(name: String) -> Key {
        Key::new(&name)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key::new(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// Position hints per thread ([`Record::field`]).
const HINTS: usize = 1024;

/// A field's hint slot: its place in memory counted in definitions, so the fields of one
/// model (one static array) never share a slot. Two that did would only cost hash
/// look-ups.
fn hint_slot(field: &'static FieldDef) -> usize {
    (field as *const FieldDef as usize / std::mem::size_of::<FieldDef>()) % HINTS
}

/// One stored record. Plain values live in `values` (absent key = unset, `false` to
/// clients); secrets live apart, in the redacted type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    #[serde(default)]
    pub values: Values,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Secret>,
}

impl Record {
    pub fn str(&self, field: &str) -> Option<&str> {
        self.values.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    pub fn int(&self, field: &str) -> Option<i64> {
        self.values.get(field).and_then(Value::as_i64)
    }
    pub fn secret(&self, field: &str) -> Option<&Secret> {
        self.secrets.get(field).filter(|s| !s.is_empty())
    }
    pub fn set(&mut self, field: &str, value: impl Into<Value>) {
        let value = value.into();
        if value.is_null() {
            self.values.swap_remove(field);
        } else {
            self.values.insert(Key::new(field), value);
        }
    }

    /// The value of the model's field `field`, looked up first where the previous record
    /// looked up on this thread had it. A model's records are mostly built the same way,
    /// so their values sit at the same positions: one entry is read (its key compared by
    /// address, see [`Key`]) instead of the hash table's probe and the key's bytes. Any
    /// other position is found by hash, and remembered for the next record.
    pub fn field(&self, field: &'static FieldDef) -> Option<&Value> {
        thread_local! {
            static AT: [std::cell::Cell<u16>; HINTS] = const { [const { std::cell::Cell::new(0) }; HINTS] };
        }
        AT.with(|at| {
            let at = &at[hint_slot(field)];
            if let Some((k, v)) = self.values.get_index(usize::from(at.get()))
                && k.is(field.name)
            {
                return Some(v);
            }
            let (i, _, v) = self.values.get_full(field.name)?;
            at.set(u16::try_from(i).unwrap_or(0));
            Some(v)
        })
    }

    /// The value of `field` as Odoo shows it to a client: `false` for unset, secrets
    /// masked, borrowed from the record when it is stored as shown. Many2one fields are
    /// left as the bare id; the caller names them.
    pub fn odoo_value_ref(&self, field: &'static FieldDef) -> Cow<'_, Value> {
        if field.secret {
            return Cow::Owned(match self.secret(field.name) {
                Some(_) => Value::String(MASK.into()),
                None => Value::Bool(false),
            });
        }
        match self.field(field) {
            None | Some(Value::Null) => Cow::Owned(match field.ftype {
                FieldType::Integer => Value::from(0),
                _ => Value::Bool(false),
            }),
            Some(v) => Cow::Borrowed(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::connector::CONNECTOR;

    #[test]
    fn a_model_field_name_is_its_definition_s_very_string() {
        let f = CONNECTOR.field("job_status").unwrap();
        let k = Key::new("job_status");
        assert!(k.is(f.name), "interned as the field's own name");
        assert!(std::ptr::eq(Key::new("engine value x").as_str(), Key::new("engine value x").as_str()));
        // Hashes, compares and serializes as the string it is.
        let mut v = Values::default();
        v.insert(Key::new("name"), json!("a"));
        assert_eq!(v.get("name"), Some(&json!("a")));
        assert_eq!(Key::new("b"), *"b");
        assert!(Key::new("a") < Key::new("b"));
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"name":"a"}"#);
        let back: Values = serde_json::from_str(r#"{"name":"a","job_status":"x"}"#).unwrap();
        assert!(back.get_index(1).unwrap().0.is(f.name));
    }

    #[test]
    fn no_two_fields_of_a_model_share_a_position_hint() {
        for model in [&CONNECTOR, &crate::model::run::RUN, &crate::model::delivery::DELIVERY] {
            let slots: std::collections::HashSet<usize> = model.fields.iter().map(hint_slot).collect();
            assert_eq!(slots.len(), model.fields.len(), "{}", model.name);
        }
    }

    #[test]
    fn a_field_is_found_whatever_position_each_record_has_it_at() {
        let (name, status) = (CONNECTOR.field("name").unwrap(), CONNECTOR.field("job_status").unwrap());
        let record = |pairs: &[(&str, Value)]| {
            let mut r = Record::default();
            for (k, v) in pairs {
                r.set(k, v.clone());
            }
            r
        };
        let a = record(&[("name", json!("a")), ("job_status", json!("running"))]);
        let b = record(&[("job_status", json!("stopped")), ("other", json!(1)), ("name", json!("b"))]);
        let c = record(&[("other", json!(2))]);
        // An owned key (past the interning bound) is found by its bytes.
        let mut d = Record::default();
        d.values.insert(Key(KeyRepr::Owned("name".into())), json!("d"));
        for _ in 0..3 {
            for (r, n, s) in [(&a, Some("a"), Some("running")), (&b, Some("b"), Some("stopped")), (&c, None, None)] {
                assert_eq!(r.field(name).and_then(Value::as_str), n);
                assert_eq!(r.field(status).and_then(Value::as_str), s);
            }
            assert_eq!(d.field(name), Some(&json!("d")));
            assert_eq!(d.field(status), None);
        }
    }
}
