//! One page of a walk: what the walk learns from the registry before its first page,
//! reading a page (`search_read` by id, then the page's VIDs in one call on
//! `g2p.reg.id`) and turning each registrant into MTS `authdata`.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::{PARTNER, REG_ID, Registry, Stop, config, int_id, odoo};

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// One registrant as MTS `authdata`, as the `g2p_mts` addon builds it: the selected
/// fields without empty or false values, dates (and datetimes) as `YYYY/MM/DD`,
/// many2one values as their display name, and `vid` added.
pub fn authdata(
    row: &Map<String, Value>,
    fields: &[String],
    types: &HashMap<String, String>,
    vid: Option<&str>,
) -> Value {
    let mut out = Map::new();
    for field in fields {
        let Some(v) = row.get(field).filter(|v| !is_empty_value(v)) else { continue };
        let v = match (types.get(field).map(String::as_str), v) {
            (Some("date" | "datetime"), Value::String(s)) => {
                let day = s.get(..10).unwrap_or(s);
                match NaiveDate::parse_from_str(day, "%Y-%m-%d") {
                    Ok(d) => Value::String(d.format("%Y/%m/%d").to_string()),
                    Err(_) => v.clone(),
                }
            }
            (Some("many2one"), Value::Array(pair)) if pair.len() == 2 => pair[1].clone(),
            _ => v.clone(),
        };
        out.insert(field.clone(), v);
    }
    if let Some(vid) = vid {
        out.insert("vid".into(), Value::String(vid.into()));
    }
    Value::Object(out)
}

/// A page read from the registry.
pub(super) struct Page {
    /// The registrant ids the request carries.
    pub ids: Vec<u64>,
    pub authdata: Vec<Value>,
}

/// What the walk learned from the registry before its first page.
pub(super) struct Prepared {
    types: HashMap<String, String>,
}

/// Logs in and checks the selected fields exist (a config error otherwise).
pub(super) async fn prepare(reg: &Registry<'_>) -> Result<Prepared, Stop> {
    let odoo = odoo()?;
    odoo.authenticate(&reg.creds).await?;
    let types = odoo.field_types(&reg.creds, PARTNER, &reg.field_refs()).await?;
    let unknown: Vec<&str> = reg.fields.iter().map(String::as_str).filter(|f| !types.contains_key(*f)).collect();
    if !unknown.is_empty() {
        return Err(config(format!(
            "Selected Fields (g2p_selected_fields): the registry's {PARTNER} has no field {}",
            unknown.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Prepared { types })
}

/// Checks the registry user may read `g2p.reg.id` (the VIDs), so that a walk finds a
/// missing right before it makes any page.
pub(super) async fn check_vid_access(reg: &Registry<'_>) -> Result<(), Stop> {
    fetch_vids(reg, &[]).await.map(drop)
}

/// The VID of each registrant of `ids`: one call on `g2p.reg.id`, the first by id.
async fn fetch_vids(reg: &Registry<'_>, ids: &[u64]) -> Result<HashMap<u64, String>, Stop> {
    let domain = json!([["partner_id", "in", ids], ["id_type.name", "=", reg.vid_type]]);
    let rows = odoo()?.search_read(&reg.creds, REG_ID, &domain, &["partner_id", "value"], Some("id"), None).await?;
    let mut vids = HashMap::with_capacity(rows.len());
    for row in rows {
        if let (Some(p), Some(v)) = (int_id(&row["partner_id"]), row["value"].as_str().filter(|v| !v.is_empty())) {
            vids.entry(p).or_insert_with(|| v.to_string());
        }
    }
    Ok(vids)
}

/// Reads the registrants matching `domain` (by id) and builds their authdata.
pub(super) async fn read_rows(reg: &Registry<'_>, prepared: &Prepared, domain: &Value) -> Result<Page, Stop> {
    let rows = odoo()?.search_read(&reg.creds, PARTNER, domain, &reg.field_refs(), Some("id"), None).await?;
    let rows: Vec<Map<String, Value>> = rows
        .into_iter()
        .filter_map(|r| match r {
            Value::Object(m) if int_id(&m["id"]).is_some() => Some(m),
            _ => None,
        })
        .collect();
    let ids: Vec<u64> = rows.iter().filter_map(|r| int_id(&r["id"])).collect();
    let vids = if ids.is_empty() { HashMap::new() } else { fetch_vids(reg, &ids).await? };
    let authdata = rows
        .iter()
        .zip(&ids)
        .map(|(row, id)| authdata(row, &reg.fields, &prepared.types, vids.get(id).map(String::as_str)))
        .collect();
    Ok(Page { ids, authdata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authdata_is_built_like_the_addon() {
        let row = json!({"id": 7, "given_name": "Amina", "family_name": "Otieno", "birthdate": "1990-03-04",
                         "gender": [1, "Female"], "address": "1 Road", "email": false, "phone": "",
                         "create_date": "2024-01-02 03:04:05"});
        let fields: Vec<String> =
            ["id", "given_name", "birthdate", "gender", "email", "phone", "create_date"].map(String::from).into();
        let types: HashMap<String, String> =
            [("birthdate", "date"), ("gender", "many2one"), ("create_date", "datetime"), ("id", "integer")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into();
        let out = authdata(row.as_object().unwrap(), &fields, &types, Some("4123"));
        assert_eq!(
            out,
            json!({"id": 7, "given_name": "Amina", "birthdate": "1990/03/04", "gender": "Female",
                   "create_date": "2024/01/02", "vid": "4123"})
        );
        assert!(out.get("family_name").is_none(), "only the selected fields");
    }
}
