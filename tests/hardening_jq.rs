//! jq programs as hostile input: compile-time bounds in this process, and the sandbox
//! (worker processes of the real binary) at run time: a program that recurses forever,
//! spins or eats memory fails its record with a clear error, the sandbox goes on serving
//! the others, and a program that keeps failing is quarantined.

use std::time::{Duration, Instant};

use mts_connector::jq::sandbox::{STRIKES, Sandbox, SandboxConfig};
use mts_connector::jq::{JqError, MAX_SOURCE, Program};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn sandbox(workers: usize) -> std::sync::Arc<Sandbox> {
    Sandbox::start(SandboxConfig {
        exe: env!("CARGO_BIN_EXE_mts-connector").into(),
        workers,
        cpu_limit: Duration::from_secs(1),
        memory_limit: 512 << 20,
    })
}

fn record(n: u64) -> String {
    json!({"input": {"__id": format!("uuid:{n}"), "n": n}, "output": {"vid": "123", "token": format!("tok-{n}")}})
        .to_string()
}

const FORMAT: &str = r#"{"id": .input.__id, "token": .output.token}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_render_in_order_in_batches() {
    let sb = sandbox(2);
    let records: Vec<String> = (0..500).map(record).collect();
    let out = sb.render_many(FORMAT, &records).await;
    for (n, body) in out.iter().enumerate() {
        assert_eq!(body, &Ok(json!({"id": format!("uuid:{n}"), "token": format!("tok-{n}")})), "record {n}");
    }
    // No program: the body is `.output`, as MTS sends it.
    assert_eq!(sb.render("  ", &record(7)).await, Ok(json!({"vid": "123", "token": "tok-7"})));
    // A runtime error is the record's error, not the worker's.
    let err = sb.render(".input.__id | tonumber", &record(1)).await.unwrap_err();
    assert!(matches!(&err, JqError::Runtime(m) if m.starts_with("jq program failed")), "{err:?}");
    assert_eq!(sb.render(FORMAT, &record(3)).await.unwrap()["token"], "tok-3");
}

/// What each hostile program must fail with, and how long it may take.
const HOSTILE: &[(&str, &str)] = &[
    ("def f: [f]; f", "recursed too deep"),
    ("def f: 1 + f; f", "recursed too deep"),
    ("last(range(1e12))", "ran longer than"),
    ("[repeat(1)] | length", "ran longer than"),
    ("[range(1e10)] | length", "MiB of memory|ran longer than"),
    ("\"x\" * 1000000000 | length", "MiB of memory"),
    ("reduce range(1e9) as $i (\"x\"; . + .)", "MiB of memory"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_programs_fail_their_record_and_the_others_go_on() {
    let sb = sandbox(1);
    for (program, why) in HOSTILE {
        let started = Instant::now();
        let err = sb.render(program, &record(1)).await.unwrap_err();
        let took = started.elapsed();
        match &err {
            JqError::Limit(m) => assert!(why.split('|').any(|w| m.contains(w)), "{program}: {m}"),
            other => panic!("{program}: {other:?}"),
        }
        assert!(took < Duration::from_secs(8), "{program} took {took:?}");
        // The one worker was replaced: a good record right after is fine.
        assert_eq!(sb.render(FORMAT, &record(2)).await.unwrap()["token"], "tok-2", "after {program}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_program_in_a_batch_fails_only_its_records_and_is_quarantined() {
    let sb = sandbox(1);
    let bad = "def f: [f]; f";
    // Interleaved good and bad records, queued together: the good ones all render.
    let mut queued = Vec::new();
    for n in 0..20u64 {
        let sb = sb.clone();
        let program = if n % 4 == 0 { bad } else { FORMAT };
        queued.push(tokio::spawn(async move { (n, sb.render(program, &record(n)).await) }));
    }
    let mut bad_errors = Vec::new();
    for q in queued {
        let (n, out) = q.await.expect("task");
        if n % 4 == 0 {
            bad_errors.push(out.unwrap_err().to_string());
        } else {
            assert_eq!(out.unwrap()["token"], format!("tok-{n}"));
        }
    }
    assert_eq!(bad_errors.len(), 5);
    // After STRIKES failures in a row the program is not evaluated any more.
    assert!(bad_errors.iter().any(|e| e.starts_with("not evaluated")), "{bad_errors:?}");
    let started = Instant::now();
    let err = sb.render(bad, &record(99)).await.unwrap_err().to_string();
    assert!(err.contains(&format!("failed on its last {STRIKES} records")), "{err}");
    assert!(started.elapsed() < Duration::from_millis(200), "quarantined records fail at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_binary_is_unavailable_not_a_crash() {
    let sb = Sandbox::start(SandboxConfig { exe: "/nonexistent/mts-connector".into(), ..Default::default() });
    let err = sb.render(FORMAT, &record(1)).await.unwrap_err();
    assert!(matches!(err, JqError::Unavailable(_)), "{err:?}");
}

/// Nesting and chains of every kind jaq's parser recurses on.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("parentheses", format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        ("arrays", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("objects", format!("{}1{}", "{a:".repeat(n), "}".repeat(n))),
        ("interpolations", format!("{}1{}", "\"\\(".repeat(n), ")\"".repeat(n))),
        ("plus chain", format!("1{}", "+1".repeat(n))),
        ("pipe chain", format!(".{}", "|.".repeat(n))),
        ("comma chain", format!("1{}", ",1".repeat(n))),
        ("negations", format!("{}1", "-".repeat(n))),
        ("bindings", format!("{}.", ". as $x | ".repeat(n))),
        ("try chain", format!("{}1", "try ".repeat(n))),
        ("ifs", format!("{}1{}", "if . then ".repeat(n), " else 2 end".repeat(n))),
        ("reduces", format!("{}.{}", "reduce . as $x (.; ".repeat(n), ")".repeat(n))),
    ]
}

#[test]
fn deep_and_long_programs_compile_or_are_refused_without_crashing() {
    // Within the nesting limit and the size limit: compiles (on its own large stack).
    for (what, src) in shapes(200) {
        if src.len() <= MAX_SOURCE {
            assert!(Program::compile(&src).is_ok(), "{what}");
        }
    }
    // The longest chains that fit the size limit compile too.
    for (what, src) in shapes(MAX_SOURCE) {
        let cut: String = src.chars().take(MAX_SOURCE).collect();
        // Cut programs may not parse; they must answer, not crash.
        let _ = Program::compile(&cut).map_err(|e| assert!(matches!(e, JqError::Compile(_)), "{what}: {e:?}"));
    }
    // 800 nested parentheses (which used to overflow the parser's stack) are refused clearly.
    let msg = Program::compile(&format!("{}1{}", "(".repeat(800), ")".repeat(800))).unwrap_err().to_string();
    assert!(msg.contains("nested deeper than 256 levels"), "{msg}");
    let msg = Program::compile(&" ".repeat(MAX_SOURCE + 1)).unwrap_err().to_string();
    assert!(msg.contains("more than the 8192 allowed"), "{msg}");
}

#[test]
fn random_programs_never_crash_the_compiler() {
    let seed: u64 = std::env::var("MTSC_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6a71);
    let mut rng = StdRng::seed_from_u64(seed);
    let pieces = [
        ".",
        "..",
        ".a",
        ".[0]",
        "[",
        "]",
        "{",
        "}",
        "(",
        ")",
        "|",
        ",",
        "+",
        "-",
        "*",
        "/",
        "//",
        "?",
        "as $x |",
        "$x",
        "if",
        "then",
        "else",
        "end",
        "reduce",
        "foreach",
        "def f:",
        ";",
        "f",
        "try",
        "catch",
        "\"\\(",
        "\"",
        "1",
        "null",
        "and",
        "or",
        "not",
        "label $l |",
        "break $l",
        "@base64",
        "\"s\"",
        "range(3)",
        "empty",
        "error",
        "input",
        "$ENV",
        "env",
        "limit(2; .)",
        "path(..)",
        "getpath([\"a\"])",
        "#c\n",
    ];
    for case in 0..3000 {
        let n = rng.random_range(1..if case % 10 == 0 { 2000 } else { 40 });
        let src: String = (0..n).map(|_| pieces[rng.random_range(0..pieces.len())]).collect::<Vec<_>>().join(" ");
        match Program::compile(&src) {
            Ok(_) | Err(JqError::Compile(_)) => {}
            Err(other) => panic!("seed {seed} case {case}: {other:?} for {src}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_programs_in_the_sandbox_answer_every_record() {
    let seed: u64 = std::env::var("MTSC_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6a72);
    let mut rng = StdRng::seed_from_u64(seed);
    let sb = sandbox(2);
    let pieces = [
        ".input",
        ".output",
        ".input.n",
        "|",
        ",",
        "+",
        "[",
        "]",
        "{a: 1}",
        "tostring",
        "length",
        "keys",
        ".[]?",
        "..",
        "range(5)",
        "select(. != null)",
        "map(.)",
        "tojson",
        "fromjson?",
        "//",
        "\"x\"",
        "1",
        "2",
        "add",
        "not",
        "empty",
        "error(\"e\")",
        "first(.[]?)",
        "to_entries",
        "@base64",
        "ascii_downcase?",
        "recurse",
    ];
    let mut checked = 0;
    while checked < 300 {
        let n = rng.random_range(1..8);
        let src: String = (0..n).map(|_| pieces[rng.random_range(0..pieces.len())]).collect::<Vec<_>>().join(" ");
        if Program::compile(&src).is_err() {
            continue;
        }
        checked += 1;
        let out = sb.render(&src, &record(checked)).await;
        match out {
            Ok(_) | Err(JqError::Runtime(_) | JqError::Limit(_)) => {}
            Err(other) => panic!("seed {seed}: {src}: {other:?}"),
        }
    }
    // Still serving.
    assert_eq!(sb.render(FORMAT, &record(5)).await.unwrap()["token"], Value::from("tok-5"));
}
