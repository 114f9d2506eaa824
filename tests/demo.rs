//! `mts-connector demo` shows the whole flow and ends on its own.

use std::process::Command;

#[test]
fn the_demo_imports_and_delivers_every_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_mts-connector"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("queued a manual import"), "{stdout}");
    assert!(stdout.contains("token delivered to Odoo"), "{stdout}");
    assert!(stdout.contains("1200 tokens delivered to the fake Odoo. Done."), "{stdout}");
    // More than one MTS request: the 1,200 registrations were split at 500.
    assert!(stdout.contains(" done "), "{stdout}");
    assert!(!stdout.contains("odk-demo-password") && !stdout.contains("odoo-demo-password"), "{stdout}");
}
