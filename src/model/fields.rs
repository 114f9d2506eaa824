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
pub type Values = indexmap::IndexMap<String, Value, rustc_hash::FxBuildHasher>;

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
            self.values.insert(field.to_string(), value);
        }
    }

    /// The value of `field` as Odoo shows it to a client: `false` for unset, secrets
    /// masked, borrowed from the record when it is stored as shown. Many2one fields are
    /// left as the bare id; the caller names them.
    pub fn odoo_value_ref(&self, field: &FieldDef) -> Cow<'_, Value> {
        if field.secret {
            return Cow::Owned(match self.secret(field.name) {
                Some(_) => Value::String(MASK.into()),
                None => Value::Bool(false),
            });
        }
        match self.values.get(field.name) {
            None | Some(Value::Null) => Cow::Owned(match field.ftype {
                FieldType::Integer => Value::from(0),
                _ => Value::Bool(false),
            }),
            Some(v) => Cow::Borrowed(v),
        }
    }
}
