//! Outbound clients: wire types and HTTP, nothing else (no store, no API).

pub mod mts;
pub mod odk;
pub mod odoo;

/// The first line of a body, cut short: enough to say what went wrong, never a dump.
pub fn excerpt(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default().trim();
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    }
}
