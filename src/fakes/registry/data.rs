//! The fake registry's data: the field tables of its models, registrants generated
//! from their id (and the few ids that changed since), values as Odoo shows them, and
//! searches with a domain (scanning only the id range a domain allows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta};
use serde_json::{Value, json};

use super::{RpcCall, TOKEN_TYPE, VID_TYPE};
use crate::model::domain::{Domain, Op};

pub(super) const ID_TYPES: &[(u64, &str)] = &[(1, VID_TYPE), (2, TOKEN_TYPE), (3, "National ID")];
pub(super) const GENDERS: &[(u64, &str)] = &[(1, "Female"), (2, "Male")];
pub(super) const GIVEN: &[&str] =
    &["Amina", "Brian", "Chipo", "David", "Esther", "Felix", "Grace", "Hassan", "Imani", "Juma"];
pub(super) const FAMILY: &[&str] =
    &["Otieno", "Mwangi", "Banda", "Phiri", "Kamau", "Njoroge", "Moyo", "Dube", "Achieng", "Okafor"];
pub(super) const CITIES: &[&str] = &["Nairobi", "Lusaka", "Harare", "Kampala", "Lilongwe"];

/// Odoo field types of the fake models: (name, type, comodel).
pub(super) const PARTNER_FIELDS: &[(&str, &str, &str)] = &[
    ("id", "integer", ""),
    ("name", "char", ""),
    ("display_name", "char", ""),
    ("is_registrant", "boolean", ""),
    ("is_group", "boolean", ""),
    ("given_name", "char", ""),
    ("family_name", "char", ""),
    ("birthdate", "date", ""),
    ("gender", "many2one", "gender.type"),
    ("address", "text", ""),
    ("email", "char", ""),
    ("phone", "char", ""),
    ("reg_ids", "one2many", "g2p.reg.id"),
    ("create_date", "datetime", ""),
];
pub(super) const REG_ID_FIELDS: &[(&str, &str, &str)] = &[
    ("id", "integer", ""),
    ("display_name", "char", ""),
    ("partner_id", "many2one", "res.partner"),
    ("id_type", "many2one", "g2p.id.type"),
    ("value", "char", ""),
];
pub(super) const NAMED_FIELDS: &[(&str, &str, &str)] =
    &[("id", "integer", ""), ("name", "char", ""), ("display_name", "char", "")];

pub(super) fn model_fields(model: &str) -> Option<&'static [(&'static str, &'static str, &'static str)]> {
    match model {
        "res.partner" => Some(PARTNER_FIELDS),
        "g2p.reg.id" => Some(REG_ID_FIELDS),
        "g2p.id.type" | "gender.type" => Some(NAMED_FIELDS),
        _ => None,
    }
}

pub(super) fn field_def(model: &str, field: &str) -> Option<(&'static str, &'static str)> {
    model_fields(model)?.iter().find(|(n, _, _)| *n == field).map(|(_, t, c)| (*t, *c))
}

/// A `g2p.reg.id` added after start (tokens, or VIDs given back).
#[derive(Debug, Clone)]
pub(super) struct RegId {
    pub(super) id: u64,
    pub(super) id_type: u64,
    pub(super) value: String,
}

pub(super) struct RegistryState {
    pub(super) db: String,
    pub(super) login: String,
    /// The user's password and API keys: each is accepted by `authenticate` and `execute_kw`.
    pub(super) passwords: Vec<String>,
    pub(super) uid: i64,
    pub(super) size: u64,
    pub(super) added: BTreeMap<u64, Vec<RegId>>,
    pub(super) added_owner: HashMap<u64, u64>,
    pub(super) deleted_vids: HashSet<u64>,
    pub(super) next_reg_id: u64,
    pub(super) sessions: HashSet<String>,
    pub(super) denied: HashSet<String>,
    pub(super) down: bool,
    pub(super) fail_next: usize,
    pub(super) delay: Duration,
    pub(super) calls: Vec<RpcCall>,
    pub(super) callbacks: usize,
    pub(super) refused_callbacks: usize,
    pub(super) fail_callbacks: usize,
    pub(super) unlinked: Vec<u64>,
    /// `g2p.reg.id` `create` and `write` calls applied (direct registry write-back).
    pub(super) reg_creates: usize,
    pub(super) reg_writes: usize,
}

impl RegistryState {
    pub(super) fn new(db: &str, login: &str, password: &str, size: u64) -> RegistryState {
        RegistryState {
            db: db.into(),
            login: login.into(),
            passwords: vec![password.into()],
            uid: super::REGISTRY_UID,
            size,
            added: BTreeMap::new(),
            added_owner: HashMap::new(),
            deleted_vids: HashSet::new(),
            next_reg_id: size + 1,
            sessions: HashSet::new(),
            denied: HashSet::new(),
            down: false,
            fail_next: 0,
            delay: Duration::ZERO,
            calls: Vec::new(),
            callbacks: 0,
            refused_callbacks: 0,
            fail_callbacks: 0,
            unlinked: Vec::new(),
            reg_creates: 0,
            reg_writes: 0,
        }
    }
}

/// A cheap, deterministic mix of a registrant id.
pub(super) fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 7
}

pub(super) fn has_vid(n: u64) -> bool {
    (n - 1) % 10 < 7
}

/// A 16-digit VID, unique per registrant (multiplication by a number coprime to 10^15
/// permutes the residues).
pub(super) fn vid_value(n: u64) -> String {
    format!("4{:015}", (n.wrapping_mul(2_654_435_761)) % 1_000_000_000_000_000)
}

impl RegistryState {
    pub(super) fn exists(&self, partner: u64) -> bool {
        partner >= 1 && partner <= self.size
    }

    /// (reg id, type id, value) of a registrant's live ids, by id.
    pub(super) fn ids_of(&self, partner: u64) -> Vec<(u64, u64, String)> {
        let mut out = Vec::new();
        if self.exists(partner) && has_vid(partner) && !self.deleted_vids.contains(&partner) {
            out.push((partner, 1, vid_value(partner)));
        }
        if let Some(added) = self.added.get(&partner) {
            out.extend(added.iter().map(|r| (r.id, r.id_type, r.value.clone())));
        }
        out
    }

    /// The owner of a live `g2p.reg.id`.
    pub(super) fn reg_owner(&self, id: u64) -> Option<u64> {
        if self.exists(id) && has_vid(id) && !self.deleted_vids.contains(&id) {
            return Some(id);
        }
        self.added_owner.get(&id).copied()
    }

    pub(super) fn reg_id(&self, id: u64) -> Option<(u64, u64, String)> {
        let owner = self.reg_owner(id)?;
        self.ids_of(owner).into_iter().find(|(i, _, _)| *i == id).map(|(_, t, v)| (owner, t, v))
    }

    pub(super) fn set_reg_id(&mut self, partner: u64, id_type: u64, value: &str) {
        let list = self.added.entry(partner).or_default();
        if let Some(r) = list.iter_mut().find(|r| r.id_type == id_type) {
            r.value = value.into();
            return;
        }
        let id = self.next_reg_id;
        self.next_reg_id += 1;
        list.push(RegId { id, id_type, value: value.into() });
        self.added_owner.insert(id, partner);
    }

    /// `g2p.reg.id.create({partner_id, id_type, value})` as OpenG2P 1.3 checks it: the
    /// registrant and the type must exist, and a registrant holds one id per type
    /// ("ID Type must be unique.", g2p_registry_base's constraint).
    pub(super) fn create_reg_id(&mut self, vals: &Value) -> Result<u64, Value> {
        use super::rpc::odoo_error;
        let partner = number(&vals["partner_id"]).filter(|p| self.exists(*p)).ok_or_else(|| {
            odoo_error(
                "odoo.exceptions.ValidationError",
                "The operation cannot be completed: partner_id is missing or unknown",
            )
        })?;
        let tid = number(&vals["id_type"])
            .filter(|t| ID_TYPES.iter().any(|(i, _)| i == t))
            .ok_or_else(|| odoo_error("odoo.exceptions.ValidationError", "Missing required fields on ID Type"))?;
        if self.ids_of(partner).iter().any(|(_, t, _)| *t == tid) {
            return Err(odoo_error("odoo.exceptions.ValidationError", "ID Type must be unique."));
        }
        let value = vals["value"].as_str().unwrap_or_default().to_string();
        let id = self.next_reg_id;
        self.next_reg_id += 1;
        self.added.entry(partner).or_default().push(RegId { id, id_type: tid, value });
        self.added_owner.insert(id, partner);
        self.reg_creates += 1;
        Ok(id)
    }

    /// `g2p.reg.id.write([id], {value})` (an id added after start, or a generated VID).
    pub(super) fn write_reg_id(&mut self, id: u64, value: &str) {
        self.reg_writes += 1;
        if let Some(owner) = self.added_owner.get(&id).copied()
            && let Some(r) = self.added.get_mut(&owner).and_then(|l| l.iter_mut().find(|r| r.id == id))
        {
            r.value = value.into();
        }
    }

    pub(super) fn partner_name(n: u64) -> String {
        let h = mix(n);
        format!("{}, {}", FAMILY[(h / 10 % 10) as usize].to_uppercase(), GIVEN[(h % 10) as usize].to_uppercase())
    }

    /// One field of registrant `n` as Odoo shows it; `None` for an unknown field.
    pub(super) fn partner_value(&self, n: u64, field: &str) -> Option<Value> {
        let h = mix(n);
        let given = GIVEN[(h % 10) as usize];
        let family = FAMILY[(h / 10 % 10) as usize];
        Some(match field {
            "id" => json!(n),
            "name" | "display_name" => json!(Self::partner_name(n)),
            "is_registrant" => json!(true),
            "is_group" => json!(false),
            "given_name" => json!(given),
            "family_name" => json!(family),
            "birthdate" => {
                let base = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default();
                json!((base + TimeDelta::days((h % 20_000) as i64)).format("%Y-%m-%d").to_string())
            }
            "gender" => {
                let (id, name) = GENDERS[(h / 100 % 2) as usize];
                json!([id, name])
            }
            "address" => json!(format!("{} Uhuru Road, {}", h % 900 + 1, CITIES[(h / 1000 % 5) as usize])),
            "email" if n.is_multiple_of(3) => json!(false),
            "email" => json!(format!("{}.{}{n}@example.org", given.to_lowercase(), family.to_lowercase())),
            "phone" if n.is_multiple_of(4) => json!(false),
            "phone" => json!(format!("+2547{:08}", n % 100_000_000)),
            "reg_ids" => json!(self.ids_of(n).into_iter().map(|(i, _, _)| i).collect::<Vec<_>>()),
            "create_date" => json!(format!("2024-{:02}-{:02} 08:{:02}:00", h % 12 + 1, h % 28 + 1, h % 60)),
            _ => return None,
        })
    }

    pub(super) fn reg_value(&self, id: u64, field: &str) -> Option<Value> {
        let (owner, tid, value) = self.reg_id(id)?;
        let type_name = ID_TYPES.iter().find(|(i, _)| *i == tid).map_or("", |(_, n)| *n);
        Some(match field {
            "id" => json!(id),
            "display_name" => json!(value),
            "partner_id" => json!([owner, Self::partner_name(owner)]),
            "id_type" => json!([tid, type_name]),
            "value" => json!(value),
            _ => return None,
        })
    }

    pub(super) fn named_value(list: &'static [(u64, &'static str)], id: u64, field: &str) -> Option<Value> {
        let name = list.iter().find(|(i, _)| *i == id)?.1;
        Some(match field {
            "id" => json!(id),
            "name" | "display_name" => json!(name),
            _ => return None,
        })
    }

    pub(super) fn value(&self, model: &str, id: u64, field: &str) -> Option<Value> {
        match model {
            "res.partner" if self.exists(id) => self.partner_value(id, field),
            "g2p.reg.id" => self.reg_value(id, field),
            "g2p.id.type" => Self::named_value(ID_TYPES, id, field),
            "gender.type" => Self::named_value(GENDERS, id, field),
            _ => None,
        }
    }

    /// Every value of a (dotted) path from record `id` of `model`, as a domain sees them.
    pub(super) fn path_values(&self, model: &str, id: u64, path: &str) -> Vec<Value> {
        let (head, rest) = match path.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let Some(v) = self.value(model, id, head) else { return Vec::new() };
        let Some(rest) = rest else {
            return match (field_def(model, head), v) {
                (Some(("one2many", _)), Value::Array(ids)) => ids,
                (_, v) => vec![v],
            };
        };
        let Some((_, comodel)) = field_def(model, head) else { return Vec::new() };
        let targets: Vec<u64> = match v {
            Value::Array(items) if field_def(model, head).is_some_and(|(t, _)| t == "many2one") => {
                items.first().and_then(Value::as_u64).into_iter().collect()
            }
            Value::Array(items) => items.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        };
        targets.into_iter().flat_map(|t| self.path_values(comodel, t, rest)).collect()
    }

    pub(super) fn matches(&self, model: &str, id: u64, domain: &Domain) -> bool {
        domain.matches(&|path| self.path_values(model, id, path))
    }

    /// Registrant ids matching `domain`, by id (ascending or descending), after `offset`,
    /// at most `limit`. Scans only the id range the domain's top-level `id` terms allow.
    pub(super) fn search_partners(&self, domain: &Domain, offset: usize, limit: Option<usize>, desc: bool) -> Vec<u64> {
        let (lo, hi, only) = id_bounds(domain, 1, self.size);
        let limit = limit.unwrap_or(usize::MAX);
        let matching = |n: &u64| self.matches("res.partner", *n, domain);
        match (only, desc) {
            (Some(set), _) => {
                let mut ids: Vec<u64> = set.into_iter().filter(|n| self.exists(*n) && *n >= lo && *n <= hi).collect();
                ids.sort_unstable();
                if desc {
                    ids.reverse();
                }
                ids.into_iter().filter(matching).skip(offset).take(limit).collect()
            }
            (None, false) => (lo..=hi).filter(matching).skip(offset).take(limit).collect(),
            (None, true) => (lo..=hi).rev().filter(matching).skip(offset).take(limit).collect(),
        }
    }

    /// `g2p.reg.id` ids matching `domain`; only the owners named by a top-level
    /// `partner_id` `=`/`in` term are looked at when there is one.
    pub(super) fn search_reg_ids(&self, domain: &Domain, offset: usize, limit: Option<usize>, desc: bool) -> Vec<u64> {
        let owners: Vec<u64> = match partner_bounds(domain) {
            Some(mut set) => {
                set.sort_unstable();
                set.dedup();
                set
            }
            None => (1..=self.size).chain(self.added.keys().copied().filter(|p| *p > self.size)).collect(),
        };
        let mut ids: Vec<u64> = owners
            .into_iter()
            .flat_map(|p| self.ids_of(p).into_iter().map(|(i, _, _)| i))
            .filter(|i| self.matches("g2p.reg.id", *i, domain))
            .collect();
        ids.sort_unstable();
        if desc {
            ids.reverse();
        }
        ids.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).collect()
    }

    pub(super) fn search_named(list: &'static [(u64, &'static str)], model: &str, domain: &Domain) -> Vec<u64> {
        list.iter().map(|(i, _)| *i).filter(|i| domain.matches(&|path| path_of_named(list, model, *i, path))).collect()
    }
}

pub(super) fn path_of_named(list: &'static [(u64, &'static str)], _model: &str, id: u64, path: &str) -> Vec<Value> {
    RegistryState::named_value(list, id, path).into_iter().collect()
}

pub(super) fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// The id range (and explicit id set) the top-level conjuncts of a domain allow.
pub(super) fn id_bounds(domain: &Domain, mut lo: u64, mut hi: u64) -> (u64, u64, Option<HashSet<u64>>) {
    let mut only: Option<HashSet<u64>> = None;
    let mut stack = vec![domain];
    while let Some(d) = stack.pop() {
        match d {
            Domain::And(a, b) => {
                stack.push(a);
                stack.push(b);
            }
            Domain::Term { field, op, value } if field == "id" => match (op, number(value)) {
                (Op::Gt, Some(n)) => lo = lo.max(n.saturating_add(1)),
                (Op::Ge, Some(n)) => lo = lo.max(n),
                (Op::Lt, Some(n)) => hi = hi.min(n.saturating_sub(1)),
                (Op::Le, Some(n)) => hi = hi.min(n),
                (Op::Eq, Some(n)) => {
                    lo = lo.max(n);
                    hi = hi.min(n);
                }
                (Op::In, _) => {
                    let set: HashSet<u64> = value.as_array().into_iter().flatten().filter_map(number).collect();
                    only = Some(match only {
                        Some(old) => old.intersection(&set).copied().collect(),
                        None => set,
                    });
                }
                _ => {}
            },
            _ => {}
        }
    }
    (lo, hi, only)
}

/// The owners a `g2p.reg.id` domain names at its top level (`partner_id` `=` or `in`).
pub(super) fn partner_bounds(domain: &Domain) -> Option<Vec<u64>> {
    match domain {
        Domain::And(a, b) => partner_bounds(a).or_else(|| partner_bounds(b)),
        Domain::Term { field, op: Op::In, value } if field == "partner_id" => {
            Some(value.as_array().into_iter().flatten().filter_map(number).collect())
        }
        Domain::Term { field, op: Op::Eq, value } if field == "partner_id" => number(value).map(|n| vec![n]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry(size: u64) -> RegistryState {
        RegistryState::new("reg", "u", "pw", size)
    }

    fn default_domain() -> Domain {
        Domain::parse(&serde_json::from_str(crate::model::connector::DEFAULT_G2P_DOMAIN).unwrap()).unwrap()
    }

    #[test]
    fn seventy_percent_match_the_default_domain_until_they_hold_a_token() {
        let mut st = registry(1000);
        let d = default_domain();
        assert_eq!(st.search_partners(&d, 0, None, false).len(), 700);
        st.set_reg_id(1, 2, "tok");
        assert_eq!(st.search_partners(&d, 0, None, false).len(), 699);
        let page = Domain::parse(&json!([["is_registrant", "=", true], ["id", ">", 500]])).unwrap();
        assert_eq!(st.search_partners(&page, 0, Some(10), false)[0], 501);
    }

    #[test]
    fn vids_are_unique_sixteen_digit_numbers() {
        let vids: HashSet<String> = (1..=10_000).map(vid_value).collect();
        assert_eq!(vids.len(), 10_000);
        assert!(vids.iter().all(|v| v.len() == 16 && v.bytes().all(|b| b.is_ascii_digit())));
    }

    #[test]
    fn reg_ids_are_found_by_partner_and_type_name() {
        let mut st = registry(20);
        st.set_reg_id(3, 2, "tok3");
        let d = Domain::parse(&json!([["partner_id", "in", [1, 3, 8]], ["id_type.name", "=", VID_TYPE]])).unwrap();
        assert_eq!(st.search_reg_ids(&d, 0, None, false), vec![1, 3]);
        let t = Domain::parse(&json!([["id_type", "=", TOKEN_TYPE]])).unwrap();
        assert_eq!(st.search_reg_ids(&t, 0, None, false), vec![21]);
    }
}
