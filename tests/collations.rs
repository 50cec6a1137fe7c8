//! `pgwarden db reindex-collations` on a real server whose collation versions were recorded by
//! another C library, as a cluster taken over from the `postgres:16` image (glibc 2.36) on
//! another system would have them: the dry run lists the text indexes (not the integer one) and
//! changes nothing; the run rebuilds them and refreshes the versions, rows unchanged and the
//! index used; a second run has nothing to do.
//!
//! Needs the locale en_US.UTF-8 (C and POSIX collations have no version): `.ci/run` generates it.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::process::Output;

/// A short pgwarden command addressing the running instance. Not `run_to_exit`: its guard kills
/// the postmaster of any `--data-dir` it is given.
fn pgw(args: &[&str]) -> Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgwarden"))
        .args(args)
        .env_remove("POSTGRES_PASSWORD")
        .env_remove("POSTGRES_USER")
        .env_remove("POSTGRES_DB")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, START)
        .unwrap_or_else(|| panic!("pgwarden {args:?} did not exit within {START:?}"));
    eprintln!("[test] pgwarden {} -> {:?}", args.join(" "), out);
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The file node of each index: a rebuilt index has a new one.
fn filenodes(client: &mut postgres::Client) -> (u32, u32, u32) {
    let row = client
        .query_one(
            "SELECT 'public.\"Items name idx\"'::regclass::oid, \
                    pg_relation_filenode('public.\"Items name idx\"'), \
                    pg_relation_filenode('public.items_qty_idx'), \
                    pg_relation_filenode('public.items_label_idx')",
            &[],
        )
        .unwrap();
    (row.get(1), row.get(2), row.get(3))
}

fn versions(client: &mut postgres::Client) -> (Option<String>, Option<String>, Option<String>) {
    let row = client
        .query_one(
            "SELECT datcollversion, pg_database_collation_actual_version(oid), \
                    (SELECT collversion FROM pg_collation WHERE collname = 'label_order') \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn rows(client: &mut postgres::Client) -> Vec<(i32, String, String)> {
    client
        .query("SELECT qty, name, label FROM items ORDER BY qty", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn stale_collations_are_listed_then_reindexed_and_refreshed_once() {
    if !require_locale("en_US.utf8") {
        return;
    }
    let dir = test_dir();
    let port = free_port();
    let pgwarden = start(
        dir.path(),
        port,
        &[("POSTGRES_INITDB_ARGS", "--locale=en_US.UTF-8")],
    );
    pgwarden.wait_ready(FIRST_LAUNCH);
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    client
        .batch_execute(
            "CREATE COLLATION label_order (locale = 'en_US.utf8'); \
             CREATE TABLE items (qty int, name text, label text COLLATE label_order); \
             INSERT INTO items SELECT g, 'item ' || g, 'Label-' || g FROM generate_series(1, 500) g; \
             CREATE INDEX \"Items name idx\" ON items (name); \
             CREATE INDEX items_qty_idx ON items (qty); \
             CREATE INDEX items_label_idx ON items (label); \
             ANALYZE items;",
        )
        .unwrap();
    let (_, actual, _) = versions(&mut client);
    let actual = actual.expect("en_US.UTF-8 has a collation version");
    // As the image's older glibc would have left them.
    client
        .batch_execute(
            "UPDATE pg_database SET datcollversion = '2.28' WHERE datname = 'trader'; \
             UPDATE pg_collation SET collversion = '2.28' WHERE collname = 'label_order';",
        )
        .unwrap();
    drop(client);
    let mut client = connect(port, "trader", "trader", "trader").unwrap();
    let before_rows = rows(&mut client);
    let before_nodes = filenodes(&mut client);

    // Dry run: the text indexes and the statements, not the integer index; nothing changes.
    let dry = pgw(&["db", "reindex-collations", "--dry-run", "--data-dir", data]);
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    let text = stdout(&dry);
    for needle in [
        "2.28 recorded",
        r#"REINDEX INDEX CONCURRENTLY "public"."Items name idx""#,
        r#"REINDEX INDEX CONCURRENTLY "public"."items_label_idx""#,
        r#"ALTER COLLATION "public"."label_order" REFRESH VERSION"#,
        r#"ALTER DATABASE "trader" REFRESH COLLATION VERSION"#,
        "nothing changed",
    ] {
        assert!(text.contains(needle), "{needle}: {dry:?}");
    }
    assert!(!text.contains("items_qty_idx"), "{dry:?}");
    assert_eq!(
        versions(&mut client),
        (
            Some("2.28".into()),
            Some(actual.clone()),
            Some("2.28".into())
        )
    );
    assert_eq!(
        filenodes(&mut client),
        before_nodes,
        "the dry run rebuilt an index"
    );

    // The run: the text indexes rebuilt (new files), the integer one not, versions refreshed.
    let done = pgw(&["db", "reindex-collations", "--data-dir", data]);
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    assert!(stdout(&done).contains("[1/4]"), "{done:?}");
    let after_nodes = filenodes(&mut client);
    assert_ne!(
        after_nodes.0, before_nodes.0,
        "the text index was not rebuilt"
    );
    assert_ne!(
        after_nodes.2, before_nodes.2,
        "the collated index was not rebuilt"
    );
    assert_eq!(
        after_nodes.1, before_nodes.1,
        "the integer index was rebuilt"
    );
    assert_eq!(
        versions(&mut client),
        (
            Some(actual.clone()),
            Some(actual.clone()),
            Some(actual.clone())
        )
    );
    assert_eq!(rows(&mut client), before_rows);
    let valid: bool = client
        .query_one(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'items'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(valid, "an index is left invalid");
    client.batch_execute("SET enable_seqscan = off").unwrap();
    let plan: Vec<String> = client
        .query("EXPLAIN SELECT qty FROM items WHERE name = 'item 42'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("Items name idx")),
        "{plan:?}"
    );
    let found: i32 = client
        .query_one("SELECT qty FROM items WHERE name = 'item 42'", &[])
        .unwrap()
        .get(0);
    assert_eq!(found, 42);

    // Again: nothing to do, exit 0.
    let again = pgw(&["db", "reindex-collations", "--data-dir", data]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(stdout(&again).contains("nothing to do"), "{again:?}");
    assert!(!stdout(&again).contains("REINDEX"), "{again:?}");

    // A database that does not exist is named, with the fix.
    let nosuch = pgw(&[
        "db",
        "reindex-collations",
        "--database",
        "nosuch",
        "--data-dir",
        data,
    ]);
    assert_ne!(nosuch.status.code(), Some(0), "{nosuch:?}");
    let err = String::from_utf8_lossy(&nosuch.stderr);
    assert!(
        err.contains("\"nosuch\"") && err.contains("help:"),
        "{nosuch:?}"
    );

    drop(client);
    stop(pgwarden, Signal::SIGTERM);
}
